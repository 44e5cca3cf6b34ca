"""Judge calibration in review: expert verdicts set against the judge's scores (issue 12 §6)."""

from __future__ import annotations

from compiler.review.calibration import calibrate, judge_scores


def _row(sid: str, faith: int, standalone: int = 5) -> dict:
    return {"id": sid, "metadata": {"gates": {"judge": {"faithfulness": faith, "relevance": 5, "format": 5,
                                                        "standalone": standalone}}}}


def test_agreement_confusion_and_the_disagreeing_samples():
    judged = judge_scores({"a": [_row("s1", 5), _row("s2", 3), _row("s3", 4)],
                           "b": [_row("s4", 3, standalone=3), {"id": "s5", "metadata": {"gates": {}}}]})
    assert set(judged) == {"s1", "s2", "s3", "s4"}  # s5 was never judged
    verdicts = {"s1": {"verdict": "accept"}, "s2": {"verdict": "reject", "why": "invents a date"},
                "s3": {"verdict": "edit"}, "s4": {"verdict": "reject", "why": ""}, "s5": {"verdict": "reject"}}
    cal = calibrate(judged, verdicts)
    assert cal["compared"] == 4 and cal["agreement"] == 0.5
    assert cal["confusion"] == {"judge_kept": {"accept": 1, "edit": 1, "reject": 2}}
    assert [d["id"] for d in cal["disagreements"]] == ["s2", "s4"]
    assert cal["disagreements"][0] == {"id": "s2", "node_id": "a", "why": "invents a date",
                                       "judge": {"faithfulness": 3, "relevance": 5, "format": 5, "standalone": 5}}
    # faithfulness separates kept from rejected here; relevance does not
    assert cal["mean_scores"]["faithfulness"] == {"accept": 5.0, "edit": 4.0, "reject": 3.0}
    assert cal["mean_scores"]["relevance"] == {"accept": 5.0, "edit": 5.0, "reject": 5.0}


def test_nothing_to_compare():
    assert calibrate({}, {"s1": {"verdict": "accept"}})["agreement"] is None
