"""The ``trade_finance`` contract: a letter of credit from issue to payment.

issue (signer = issuing bank) -> present (beneficiary) -> accept | reject (issuing bank)
-> pay (issuing bank, only after accept). After a reject the beneficiary may present
corrected documents again. Each step emits an event; wrong role or order fails.
"""

from __future__ import annotations

import re
from typing import Any

from bsn.ledger.contracts.base import Contract, ContractFailure, amount, event, text, text_list, user

LC_ID_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


class TradeFinanceContract(Contract):
    name = "trade_finance"
    functions = {
        "issue": ("lc_id", "applicant", "beneficiary", "amount", "currency", "documents_required"),
        "present": ("lc_id", "documents"),
        "accept": ("lc_id",),
        "reject": ("lc_id", "reason"),
        "pay": ("lc_id",),
    }
    queries = {"status": ("lc_id",)}

    def check_status(self, args: dict[str, Any], signer: str | None) -> None:
        text(args, "lc_id", max_len=128, pattern=LC_ID_RE)

    check_accept = check_pay = check_status

    def check_issue(self, args: dict[str, Any], signer: str | None) -> None:
        self.check_status(args, signer)
        user(args, "applicant")
        user(args, "beneficiary")
        amount(args)
        text(args, "currency", pattern=CURRENCY_RE)
        text_list(args, "documents_required")

    def check_present(self, args: dict[str, Any], signer: str | None) -> None:
        self.check_status(args, signer)
        text_list(args, "documents")

    def check_reject(self, args: dict[str, Any], signer: str | None) -> None:
        self.check_status(args, signer)
        text(args, "reason", max_len=1000)

    def _lc(self, ctx, lc_id: str) -> dict[str, Any]:
        lc = ctx.get(lc_id)
        if lc is None:
            raise ContractFailure(f"letter of credit {lc_id!r} does not exist")
        return lc

    def _step(self, ctx, args, *, role: str, states: tuple[str, ...], to: str, name: str, **changes):
        lc = self._lc(ctx, args["lc_id"])
        if ctx.signer != lc[role]:
            raise ContractFailure(f"only the {role.replace('_', ' ')} ({lc[role]}) may {name}")
        if lc["status"] not in states:
            raise ContractFailure(f"cannot {name} a letter of credit that is {lc['status']}")
        updated = {**lc, **changes, "status": to}
        payload = {"lc_id": args["lc_id"], **changes}
        return updated, [(args["lc_id"], updated)], [event(to, payload)]

    def do_issue(self, ctx, args):
        lc_id = args["lc_id"]
        if ctx.get(lc_id) is not None:
            raise ContractFailure(f"letter of credit {lc_id!r} already exists")
        lc = {
            "lc_id": lc_id,
            "issuing_bank": ctx.signer,
            "applicant": args["applicant"],
            "beneficiary": args["beneficiary"],
            "amount": args["amount"],
            "currency": args["currency"],
            "documents_required": args["documents_required"],
            "documents": [],
            "reason": None,
            "status": "issued",
        }
        payload = {"lc_id": lc_id, "issuing_bank": ctx.signer, "beneficiary": args["beneficiary"]}
        return lc, [(lc_id, lc)], [event("issued", payload)]

    def do_present(self, ctx, args):
        return self._step(
            ctx, args, role="beneficiary", states=("issued", "rejected"), to="presented", name="present",
            documents=args["documents"], reason=None,
        )  # fmt: skip

    def do_accept(self, ctx, args):
        return self._step(ctx, args, role="issuing_bank", states=("presented",), to="accepted", name="accept")

    def do_reject(self, ctx, args):
        return self._step(
            ctx, args, role="issuing_bank", states=("presented",), to="rejected", name="reject", reason=args["reason"]
        )

    def do_pay(self, ctx, args):
        return self._step(ctx, args, role="issuing_bank", states=("accepted",), to="paid", name="pay")

    def q_status(self, read, args):
        return read(args["lc_id"])
