"""factory_boy factories for billing tests: metered usage rows (filled by metering in production)."""

import datetime as dt

import factory

from apps.metering.models import UsageHour


class UsageHourFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageHour

    hour = factory.Sequence(lambda n: dt.datetime(2026, 10, 1, tzinfo=dt.UTC) + dt.timedelta(hours=n))
    node_seconds = 3600
    tx_committed = 0
    storage_bytes = 0


def month_of_usage(app, region, month: dt.date, **counters) -> list[UsageHour]:
    """One row per hour of ``month`` for ``app`` in ``region`` with the same ``counters``."""
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    end = dt.datetime(month.year + (month.month == 12), month.month % 12 + 1, 1, tzinfo=dt.UTC)
    hours = int((end - start).total_seconds() // 3600)
    rows = [
        UsageHourFactory.build(app=app, region=region, hour=start + dt.timedelta(hours=h), **counters)
        for h in range(hours)
    ]
    return UsageHour.objects.bulk_create(rows)
