"""The typed store client stays in step with the Store: one method per public verb, with the same signature."""

from __future__ import annotations

import inspect
import re

from backend.store import Store
from actors.store_actor import StoreActor, StoreClient

NOT_REMOTE = {"close", "migrate", "transaction"}  # the actor's own lifecycle, not verbs for callers


def public_methods(cls) -> dict[str, str]:
    """name -> signature, without the tracing parameter Ray adds to an actor class's methods once it is used."""
    def plain(f) -> str:
        return re.sub(r",? \*?,? ?_ray_trace_ctx=None", "", str(inspect.signature(f)))

    return {n: plain(f) for n, f in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")}


def test_every_store_verb_has_a_typed_client_method_with_its_signature():
    verbs = {n: s for n, s in public_methods(Store).items() if n not in NOT_REMOTE}
    client = public_methods(StoreClient)
    missing = sorted(set(verbs) - set(client))
    assert not missing, f"StoreClient lacks {missing}: add a method per verb (see its docstring)"
    differ = {n: (verbs[n], client[n]) for n in verbs if verbs[n] != client[n]}
    assert not differ, differ
    extra = sorted(set(client) - set(verbs) - {"shutdown"})
    assert not extra, f"StoreClient methods that are no Store verb: {extra}"


def test_the_actor_is_the_store_with_a_ready_check():
    assert issubclass(StoreActor, Store)
    assert set(public_methods(Store)) <= set(public_methods(StoreActor))
