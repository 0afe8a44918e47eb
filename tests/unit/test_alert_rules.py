"""The Prometheus rules say the same as the core: the same burn-rate pairs and factors, one recorded
burn rate per window, and every SLO's event counter name the service exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from provisioner.core.slo import BURN_ALERTS, burn_windows, window_label

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"


def _rules() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r.get("alert") or r["record"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def test_recorded_burn_rates_cover_every_window() -> None:
    rules = _rules()
    for w in burn_windows():
        label = window_label(w)
        expr = rules[f"slo:burn_rate:{label}"]
        assert expr.count(f"[{label}]") == 2, label
        assert "provisioner_slo_events_total" in expr and "provisioner_slo_objective" in expr


def test_alert_pairs_match_the_core() -> None:
    rules = _rules()
    pairs = set()
    for name in ("ProvisionerErrorBudgetFastBurn", "ProvisionerErrorBudgetSlowBurn"):
        for long_w, f1, short_w, f2 in re.findall(
                r"slo:burn_rate:(\w+) >= ([\d.]+) and slo:burn_rate:(\w+) >= ([\d.]+)", rules[name]):
            assert f1 == f2
            pairs.add((long_w, short_w, float(f1), name.endswith("FastBurn")))
    assert pairs == {(window_label(a.long_window), window_label(a.short_window), a.factor, a.severity == "page")
                     for a in BURN_ALERTS}
