"""The report's audit section, from result rows only: one figure per method with θ_u / θ_r / θ_o bars under each
probe, the verdict per seed, the relearning curves and the in-context note about θ_r."""

from __future__ import annotations

from unlearnkit.report.figures import audit_section, audit_verdicts, evaluation_sections

R = {"forms.forget.qa.prob": 0.10, "relearn.prob@0": 0.10, "relearn.prob@5": 0.20, "icl.prob": 0.80,
     "icl.gain": 0.70, "quant.prob@4bit": 0.10}
ORIG = {"forms.forget.qa.prob": 0.90, "relearn.prob@0": 0.90, "relearn.prob@5": 0.95, "icl.prob": 0.82,
     "icl.gain": -0.08, "quant.prob@4bit": 0.85}
SUPP = {**R, "relearn.prob@5": 0.90, "quant.prob@4bit": 0.60}
REM = {**R, "forms.forget.qa.prob": 0.12, "relearn.prob@5": 0.25}


def rows(seeds=(0, 1)):
    out = []
    for s in seeds:
        out += [{"method": "retrain", "role": "oracle", "is_oracle": True, "seed": s, "status": "ok", "metrics": R},
                {"method": "original", "role": "original", "seed": s, "status": "ok", "metrics": ORIG},
                {"method": "ga", "role": "method", "seed": s, "status": "ok", "metrics": SUPP},
                {"method": "rocr", "role": "method", "seed": s, "status": "ok", "metrics": REM},
                {"method": "broken", "role": "method", "seed": s, "status": "error", "metrics": {}}]
    return out


def test_verdicts_per_method_and_seed():
    vs = audit_verdicts(rows())
    got = {(v["method"], v["seed"]): v["verdict"] for v in vs}
    assert got == {("ga", 0): "suppression", ("ga", 1): "suppression", ("rocr", 0): "removal",
                   ("rocr", 1): "removal"}
    ga = next(v for v in vs if v["method"] == "ga")
    assert {p["probe"] for p in ga["probes"] if p["exposes"]} == {"relearn", "quant4"}


def test_section_has_one_figure_per_method_and_the_in_context_note():
    html = audit_section(rows(), {"ga": "#E69F00"})
    assert 'id="audit-ga"' in html and 'id="audit-rocr"' in html and 'id="audit-broken"' not in html
    assert "seed 0: suppression, seed 1: suppression" in html and "seed 0: removal" in html
    assert 'id="audit-relearn"' in html  # curves of every method with θ_r and θ_o
    assert "works on θ_r too" in html and "+0.700" in html
    assert html.count("relearn · θ_r") >= 1 and "relearn · θ_u" in html and "relearn · θ_o" in html


def test_runs_without_probes_get_no_audit_section(tmp_path):
    plain = [{**r, "metrics": {"forget.prob": 0.1}} for r in rows()]
    assert audit_section(plain, {}) == ""
    assert 'id="audit"' not in evaluation_sections(tmp_path, plain, [])
    assert 'id="audit"' in evaluation_sections(tmp_path, rows(), [])


def test_in_context_note_says_when_theta_r_does_not_read_the_context():
    flat = [{**r, "metrics": {**r["metrics"], "icl.gain": 0.001}} if r.get("role") == "oracle" else r for r in rows()]
    html = audit_section(flat, {})
    assert "does not move θ_r here" in html and "works on θ_r too" not in html
