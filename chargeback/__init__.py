"""Load-test an LLM gateway protected by Kuadrant and verify, from its own metrics, that each tier's limits hold
and that its chargeback counters count every user's calls exactly.

The library's public modules, in the order of the flow:

- `chargeback.plan` (`load_plan`, `Plan`, `Rate`) and `chargeback.summary` (`PlanSummary`): the manifests;
- `chargeback.ledger` (`Ledger`) and `chargeback.record` (`RunRecord`): what the client saw, and the run record;
- `chargeback.schema` (`MetricSchema`, `register_schema`): the metric names a gateway serves;
- `chargeback.verify` (`gather`, `Verification`, `UserCheck`) and `chargeback.verdicts` (the checks' predicates);
- `chargeback.pytest_plugin`: the checks as a pytest plugin (`pytest --run runs/latest`);
- `chargeback.report`: the chargeback report.

Each is imported on its own (importing this package loads none of them).
"""
__version__ = "0.12.0"
