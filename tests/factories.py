"""factory_boy factories shared by the suite."""

import factory
from django.contrib.auth import get_user_model

from apps.chainapps.builtin import ensure_builtin_framework
from apps.chainapps.models import Framework, WarmNode
from apps.regions.models import Region
from apps.tenants.models import Membership, Role, Tenant


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.django.Password("correct-horse-battery")


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    slug = factory.Sequence(lambda n: f"tenant{n}")
    name = factory.LazyAttribute(lambda t: t.slug.title())


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    tenant = factory.SubFactory(TenantFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.OWNER


class RegionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Region
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"test-r{n}")
    name = factory.LazyAttribute(lambda r: r.code)
    city = "Testville"
    country = "CN"
    driver = Region.Driver.PROCESS


class WarmNodeFactory(factory.django.DjangoModelFactory):
    """A warm node row as ``warm_fill`` leaves it once made (docs/provisioning.md, "Warm
    nodes"); no container behind it."""

    class Meta:
        model = WarmNode

    region = factory.SubFactory(RegionFactory, driver=Region.Driver.DOCKER)
    framework = factory.LazyFunction(lambda: ensure_builtin_framework(Framework))
    image = factory.LazyAttribute(lambda w: w.framework.image)
    name = factory.Sequence(lambda n: f"bsn-test-warm{n}")
    host_port = factory.Sequence(lambda n: 29500 + n % 400)
    state = WarmNode.State.READY


def custody_user(app, name: str, *, status: str = "active"):
    """A custody-mode app user with its sealed key, as ``custody_user_create`` leaves it once
    the ledger confirmed it (no ledger involved): ``(user, private key base64)``."""
    import base64

    from apps.custody import envelope
    from apps.custody.models import CustodyKey
    from apps.custody.services import _open_data_key, datakey_get_or_create
    from apps.gateway.models import AppUser
    from bsn.ledger.crypto import generate_private_key, public_key_of

    private = generate_private_key()
    public = public_key_of(private)
    user = AppUser.objects.create(app=app, name=name, public_key=public, status=status, mode=AppUser.Mode.CUSTODY)
    data_key = datakey_get_or_create(tenant=app.tenant)
    sealed = envelope.seal(_open_data_key(data_key), str(user.pk), public, base64.b64decode(private))
    CustodyKey.objects.create(user=user, data_key=data_key, ciphertext=sealed)
    return user, private
