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


def test_markdown_section_gives_verdicts_probe_scores_and_relearning_curves():
    from unlearnkit.report.figures import audit_markdown

    md = audit_markdown(rows())
    assert "## Audit: removed or suppressed?" in md
    lines = md.splitlines()
    assert "| ga | 0 | suppression |" in "\n".join(lines) and "| rocr | 1 | removal |" in "\n".join(lines)
    assert not any(line.startswith("| broken") for line in lines)
    header = next(line for line in lines if line.startswith("| Model | no attack"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    ga = next(line for line in lines if line.startswith("| ga (seed 0) |"))
    cells = dict(zip(cols, [c.strip() for c in ga.strip("|").split("|")]))
    assert cells["no attack"] == "0.100"  # SUPP's plain forget score
    orig = next(line for line in lines if line.startswith("| θ_o (original) |"))
    assert dict(zip(cols, [c.strip() for c in orig.strip("|").split("|")]))["no attack"] == "0.900"
    curve = next(line for line in lines if line.startswith("| ga (seed 1) | 0.100 |"))
    assert curve.split("|")[2].strip() == "0.100" and curve.split("|")[3].strip() == "0.900"  # @0, @5
    assert audit_markdown([{**r, "metrics": {"forget.prob": 0.1}} for r in rows()]) == ""


def test_llm_table_has_columns_for_rwku_metrics_and_never_a_column_of_dashes():
    from unlearnkit.report._common import columns_for
    from unlearnkit.report.summary import summarize

    rwku = {"rwku.forget.fb": 0.3, "rwku.forget.qa": 0.4, "rwku.neighbor.all": 0.8, "rwku_utility.mmlu.acc": 0.4}
    rs = [{"method": "retrain", "role": "oracle", "is_oracle": True, "seed": 0, "status": "ok", "metrics": rwku},
          {"method": "npo", "role": "method", "seed": 0, "status": "ok", "metrics": rwku}]
    keys = [c.key for c in columns_for(summarize(rs))]
    assert keys[:4] == ["rwku.forget.fb", "rwku.forget.qa", "rwku.neighbor.all", "rwku_utility.mmlu.acc"]
    assert "unlearn_acc" not in keys
    only_probes = [{**r, "metrics": {"forms.forget.qa.prob": 0.2}} for r in rs]
    assert "unlearn_acc" not in [c.key for c in columns_for(summarize(only_probes))]
