"""The Dramatiq broker: Redis when PROVISIONER_BROKER_URL is set, otherwise in-process (StubBroker).

The broker is only a doorbell carrying job ids; Dramatiq's own retries and time limits are removed
because the database-side engine and reconciler own retries, timeouts and cancellation (a time
limit raised inside the worker thread would orphan ansible-playbook).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries, TimeLimit

from provisioner.store.config import Settings, get_settings

_broker: dramatiq.Broker | None = None


def make_broker(settings: Settings) -> dramatiq.Broker:
    if settings.broker_url:
        from dramatiq.brokers.redis import RedisBroker

        # A dead worker's unacked messages return to the queue after this many ms.
        broker: dramatiq.Broker = RedisBroker(url=settings.broker_url, heartbeat_timeout=15_000,
                                              dead_message_ttl=86_400_000)
    else:
        broker = StubBroker()
        broker.emit_after("process_boot")
    for mw in list(broker.middleware):
        if isinstance(mw, (Retries, TimeLimit)):
            broker.middleware.remove(mw)
    return broker


def get_broker() -> dramatiq.Broker:
    global _broker
    if _broker is None:
        _broker = make_broker(get_settings())
        dramatiq.set_broker(_broker)
    return _broker
