"""A last review of this stop's change (55abe2b..HEAD): an Annotated key with
unhashable metadata that registration takes is found by override() and
aresolve() too, and a scoped value its owner holds is a hit from a deeper
checkpoint under aresolve (no second aresolve); plus override() as a decorator
and a too-large shutdown_timeout."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

import pytest

import di


@dataclasses.dataclass  # eq=True, not frozen: unhashable, as most metadata
class Doc:
    text: str


class Foo:
    pass


class Req:
    pass


_KEY = Annotated[Foo, Doc("the foo")]


def _container() -> tuple[di.Container, Foo]:
    reg = di.Registry()
    foo = Foo()
    reg.value(_KEY, foo)  # accepted: normalised to Foo (test_key_validation_review)
    return di.Container(reg), foo


def test_override_takes_the_annotated_key_registration_took() -> None:
    c, _ = _container()
    fake = Foo()
    with c.override(_KEY, fake):
        assert c.resolve(Foo) is fake


def test_aresolve_finds_an_annotated_key_with_unhashable_metadata() -> None:
    c, foo = _container()
    assert asyncio.run(c.aresolve(_KEY)) is foo


def test_async_scoped_hit_in_owner_is_not_a_second_aresolve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg = di.Registry(levels=("app", "request", "action"))
    reg.register(Req, Req, scope="request")
    c = di.Container(reg)
    seen: list[int] = []

    async def main() -> None:
        async with c, c.scope("request") as request:
            made = await request.aresolve(Req)
            async with c.scope("action") as action:
                assert await action.aresolve(Req) is made  # plans compiled
                cls = type(action)
                original = cls.aresolve

                async def counting(self: di.Checkpoint, key: object) -> object:
                    seen.append(self.level)  # type: ignore[arg-type]
                    return await original(self, key)  # type: ignore[arg-type]

                monkeypatch.setattr(cls, "aresolve", counting)
                assert await action.aresolve(Req) is made
                monkeypatch.undo()

    asyncio.run(main())
    assert seen == ["action"], seen  # the call asked; the owner's hit needs no call


def test_override_decorates_plain_and_async_functions() -> None:
    # The @contextmanager object override() returned before could decorate; so
    # can this one: a fresh override for each call.
    reg = di.Registry()

    class Mailer:
        pass

    reg.register(Mailer, Mailer)
    c = di.Container(reg)
    fake = Mailer()

    @c.override(Mailer, fake)
    def sync_call() -> Mailer:
        return c.resolve(Mailer)

    @c.override(Mailer, fake)
    async def async_call() -> Mailer:
        return await c.aresolve(Mailer)

    with c:
        assert sync_call() is fake and sync_call() is fake
        assert asyncio.run(async_call()) is fake
        assert c.resolve(Mailer) is not fake


def test_a_too_large_shutdown_timeout_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="shutdown_timeout"):
        di.Container(di.Registry(), shutdown_timeout=10**400)
