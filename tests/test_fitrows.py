"""Rows over the training length lose the middle of their prompt, never their answer."""

from compiler.train.fitrows import ELLIPSIS, fit_rows


def words(messages):  # a tokenizer stand-in: one token per whitespace-separated word
    return sum(len(m["content"].split()) for m in messages)


def row(user: str, answer: str) -> dict:
    return {"id": "r", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": user},
                                    {"role": "assistant", "content": answer}]}


EXCERPT = " ".join(f"w{i}" for i in range(300))
QUESTION = "Question: what does the excerpt say about w299?"


def test_fitting_rows_are_untouched():
    r = row("short question", "short answer")
    fitted = fit_rows([r], words, 64)
    assert fitted.rows[0] is r and fitted.shortened == fitted.truncated == 0


def test_long_prompt_loses_its_middle_and_keeps_head_question_and_answer():
    answer = "the answer is seven words long here"
    r = row(EXCERPT + "\n\n" + QUESTION, answer)
    fitted = fit_rows([r], words, 100)
    (out,) = fitted.rows
    assert fitted.shortened == 1 and fitted.truncated == 0
    assert words(out["messages"]) <= 100
    user = out["messages"][1]["content"]
    assert ELLIPSIS in user and user.startswith("w0 w1") and user.endswith(QUESTION)
    assert out["messages"][2]["content"] == answer and out["messages"][0] == r["messages"][0]
    assert out["id"] == "r" and r["messages"][1]["content"].startswith(EXCERPT)  # the input row is not changed
    # the longest prompt that fits: one more character of the excerpt would not fit
    assert words(out["messages"]) >= 90


def test_answer_alone_over_the_limit_is_counted_as_truncated():
    r = row(QUESTION, " ".join(["long"] * 200))
    fitted = fit_rows([r], words, 100)
    assert fitted.truncated == 1 and fitted.shortened == 0 and fitted.rows[0] is r


def test_the_longest_user_turn_is_the_one_shortened():
    r = {"messages": [{"role": "user", "content": "first turn"}, {"role": "assistant", "content": "ok"},
                      {"role": "user", "content": EXCERPT + " " + QUESTION}, {"role": "assistant", "content": "fine"}]}
    (out,) = fit_rows([r], words, 60).rows
    assert out["messages"][0]["content"] == "first turn" and ELLIPSIS in out["messages"][2]["content"]
