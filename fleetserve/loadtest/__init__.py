"""`fleetserve loadtest`: open-loop load tests with profiles, SLO gate, shadow comparison and reports.

profile (when) -> workload (what) -> generator + client (send) -> records -> metrics, slo, shadow -> report.
"""
