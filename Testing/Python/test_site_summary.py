"""The site summary of an archive run (:mod:`ChestXrayCounterfactualLib.runs.site_summary`), on hand-made index rows:
a finding called positive at more than twice its expected rate is flagged with one sentence, one at 1.5 times is
not, nor is one that all of three images are called positive for; failed inputs are not counted; the expected rates
come from the bundled model card; older indexes are still read.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ChestXrayCounterfactualLib.runs.index import COLUMNS, OLDER_COLUMNS, make_row, probabilities_text, read_index
from ChestXrayCounterfactualLib.runs.site_summary import (
    SiteReference,
    load_reference,
    reference_from_card,
    summarise,
    wilson_interval,
    write_summary,
)

pytestmark = pytest.mark.fast

REFERENCE = SiteReference(
    model_set="toy",
    thresholds={"Cardiomegaly": 0.5, "Pneumothorax": 0.5},
    expected={"Cardiomegaly": 0.2, "Pneumothorax": 0.2},
    prevalence={"Cardiomegaly": 0.1, "Pneumothorax": 0.1},
    test_images=300,
    ood_cut=5.0,
)


def rows(n: int, cardiomegaly: int, pneumothorax: int, scores: tuple[float, ...] = ()) -> list[dict[str, str]]:
    """``n`` classified inputs, the first ``cardiomegaly`` (and ``pneumothorax``) called positive for it; the first
    inputs explained with the given out-of-distribution ``scores``, the rest negative.
    """
    made = []
    for k in range(n):
        p = {"Cardiomegaly": 0.9 if k < cardiomegaly else 0.1, "Pneumothorax": 0.5 if k < pneumothorax else 0.4999}
        status, score = ("done", scores[k]) if k < len(scores) else ("negative", "")
        made.append(make_row(input=f"{k}.png", status=status, probabilities=probabilities_text(p), ood_score=score))
    return made


def test_a_finding_called_positive_at_more_than_twice_its_expected_rate_is_flagged_with_one_sentence():
    summary = summarise(rows(100, cardiomegaly=50, pneumothorax=30), REFERENCE)
    cardiomegaly, pneumothorax = summary["findings"]["Cardiomegaly"], summary["findings"]["Pneumothorax"]
    assert (cardiomegaly["called_positive"], cardiomegaly["share"], cardiomegaly["ratio"]) == (50, 0.5, 2.5)
    assert cardiomegaly["flagged"] and cardiomegaly["share_95ci"][0] > 0.4
    assert pneumothorax["called_positive"] == 30, "a probability at the threshold is called positive"
    assert not pneumothorax["flagged"] and pneumothorax["ratio"] == 1.5
    (warning,) = summary["warnings"]
    assert warning.startswith("Cardiomegaly was called positive in 50% of this run's 100 classified images (50;")
    assert "more than 2 times the 20% it is called positive at the same threshold (0.50)" in warning
    assert "\n" not in warning


def test_no_warning_when_every_finding_is_near_its_expected_rate():
    summary = summarise(rows(100, cardiomegaly=22, pneumothorax=18), REFERENCE)
    assert summary["warnings"] == [] and not any(f["flagged"] for f in summary["findings"].values())


def test_three_images_all_called_positive_do_not_flag_a_finding_expected_in_a_quarter_of_images():
    """A share of 100%, four times the expected 25%, but the low end of the 95% interval of three images (44%) is not
    above twice it (50%): three images cannot tell that from chance. (The bundled classifier calls each finding
    positive on 25% to 36% of its test images, so no run of three images can flag one.)
    """
    reference = replace(REFERENCE, expected={"Cardiomegaly": 0.25, "Pneumothorax": 0.25})
    summary = summarise(rows(3, cardiomegaly=3, pneumothorax=0), reference)
    assert summary["findings"]["Cardiomegaly"]["ratio"] == 4.0
    assert summary["findings"]["Cardiomegaly"]["share_95ci"][0] == pytest.approx(0.4385, abs=1e-4)
    assert summary["warnings"] == []


def test_failed_inputs_are_not_counted_and_only_explained_inputs_have_scores():
    made = [*rows(4, cardiomegaly=1, pneumothorax=0, scores=(1.0, 2.0, 6.0)), make_row(input="x.dcm", status="failed")]
    summary = summarise(made, REFERENCE)
    assert (summary["inputs"], summary["classified"]) == (5, 4)
    assert summary["findings"]["Cardiomegaly"]["share"] == 0.25
    assert summary["out_of_distribution"] == {
        "scored": 3, "median": 2.0, "p95": 6.0, "max": 6.0, "cut": 5.0, "above_cut": 1,
    }


def test_a_run_with_nothing_classified_has_no_findings_and_no_scores():
    summary = summarise([make_row(input="x.dcm", status="failed")], REFERENCE)
    assert (summary["classified"], summary["findings"], summary["warnings"]) == (0, {}, [])
    assert summary["out_of_distribution"] == {"scored": 0}


def test_the_interval_of_a_share_stays_inside_zero_and_one():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(120, 203)
    assert low == pytest.approx(0.5224, abs=1e-4) and high == pytest.approx(0.6565, abs=1e-4)


def test_the_expected_rates_are_the_bundled_classifiers_positive_calls_on_its_test_split():
    """Counted from the card's test sensitivity, specificity and label counts: 76 of the 300 test images for
    Pneumothorax (15 of its 20 positives and 61 of its 280 negatives), as the classifier calls them.
    """
    reference = load_reference(None)
    assert reference is not None and reference.test_images == 300
    assert reference.expected["Pneumothorax"] == pytest.approx(76 / 300)
    assert reference.expected["Cardiomegaly"] == pytest.approx(82 / 300)
    assert reference.prevalence["Pneumothorax"] == pytest.approx(34 / 284)
    assert reference.ood_cut is not None and reference.ood_cut > 0


def test_a_model_set_without_a_card_has_no_reference(tmp_path):
    spec = tmp_path / "model_set.json"
    spec.write_text("{}")
    assert load_reference(spec) is None


def test_a_card_without_test_metrics_gives_shares_but_never_a_warning():
    reference = reference_from_card({"name": "own", "thresholds": {"Cardiomegaly": 0.5, "Pneumothorax": 0.5}})
    summary = summarise(rows(50, cardiomegaly=50, pneumothorax=50), reference)
    assert summary["findings"]["Cardiomegaly"]["share"] == 1.0
    assert summary["findings"]["Cardiomegaly"]["expected_rate"] is None and summary["warnings"] == []


def test_the_summary_is_written_whole_and_nothing_else_is_left(tmp_path):
    summary = summarise(rows(10, cardiomegaly=1, pneumothorax=1, scores=(1.5,)), REFERENCE)
    write_summary(tmp_path / "site_summary.json", summary)
    assert json.loads((tmp_path / "site_summary.json").read_text()) == summary
    assert [path.name for path in tmp_path.iterdir()] == ["site_summary.json"]


@pytest.mark.parametrize("older", OLDER_COLUMNS)
def test_an_index_written_before_the_newer_columns_is_still_read(tmp_path, older):
    values = {"input": "a.png", "status": "done", "folder": "a", "sent": "yes", "probabilities": "Cardiomegaly=0.9"}
    path = tmp_path / "index.csv"
    path.write_text(",".join(older) + "\n" + ",".join(values.get(column, "") for column in older) + "\n")
    row = read_index(path)["a.png"]
    assert list(row) == list(COLUMNS) and row["ood_score"] == "" and row["folder"] == "a"
