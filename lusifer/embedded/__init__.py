"""The embedded services of local mode: the cluster's own engines, started on this machine.

An embedded PostgreSQL that persists in the work directory (``postgres``) and a Redis of the
command's own (``redis``), so local mode runs exactly the code path of a cluster.
"""
