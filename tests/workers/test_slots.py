"""Calls in flight per worker process: a cap, and profile calls served before ratings."""

from __future__ import annotations

import threading
import time

from lusifer.llm import ChatRequest
from workers.slots import PrioritySlots


def _request(schema_name: str) -> ChatRequest:
    return ChatRequest(model="m", messages=(("user", "hi"),), schema_name=schema_name)


def test_an_urgent_waiter_gets_the_next_slot_before_one_that_came_first() -> None:
    slots = PrioritySlots(1)
    slots.acquire(urgent=False)
    order: list[str] = []

    def waiter(name: str, urgent: bool) -> None:
        slots.acquire(urgent=urgent)
        order.append(name)
        slots.release()

    rating = threading.Thread(target=waiter, args=("rating", False))
    rating.start()
    time.sleep(0.2)  # the rating waits first
    profile = threading.Thread(target=waiter, args=("profile", True))
    profile.start()
    time.sleep(0.2)
    slots.release()
    rating.join(5)
    profile.join(5)
    assert order == ["profile", "rating"]


def test_a_process_never_has_more_calls_in_flight_than_its_slots() -> None:
    slots = PrioritySlots(3)
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def call(kind: str) -> None:
        with slots.hold(_request(kind)):
            with lock:
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])
            time.sleep(0.05)
            with lock:
                in_flight[0] -= 1

    threads = [threading.Thread(target=call, args=(kind,)) for kind in ["profile", "ratings"] * 6]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert in_flight == [0, 3]
