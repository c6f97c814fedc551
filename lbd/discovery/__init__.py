"""Target discovery: target groups whose targets come from the services' own registry (DNS or etcd).

One provider per target group with ``discovery``, run once per node by the supervisor (as the health
checker is), never per worker. A provider hands over the complete list of targets it knows each time it
changes; the supervisor feeds it to the same registration path as the admin API's RegisterTargets and
DeregisterTargets (lbd/upstream/registry.py), so new targets start as ``initial`` and are health checked,
and targets that leave drain for the group's deregistration delay. A provider that fails keeps its last
known targets and says so (logs, ``lbd_discovery_up``, the admin API).
"""
