"""Lusifer's own Prometheus endpoint (`lusifer metrics`).

Every figure is read from the database and the broker when Prometheus scrapes, never counted
inside a worker: the numbers are right however many workers run, restart or scale to zero.
"""
