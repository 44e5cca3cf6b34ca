"""Refusal detection against a labelled set: real refusals are caught, polite or emphatic answers
are kept (review §4.3: customer-support and empathy skills lost most samples to `refusal`)."""

from __future__ import annotations

import json

import pytest

from compiler.compile.generate import parse
from compiler.gates.refusal import find_refusal

REFUSALS = [
    "I can't help with that.",
    "I cannot help with that request.",
    "I can’t assist with that.",
    "I'm unable to provide that information.",
    "I am unable to provide medical advice.",
    "I'm not able to help with this request.",
    "I am not able to generate that content.",
    "As an AI language model, I cannot browse the internet.",
    "As an AI language model I cannot provide personal opinions.",
    "As an AI, I don't have access to real-time data.",
    "As a large language model, I am unable to do that.",
    "As an AI assistant, I can't share that.",
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I cannot provide that information.",
    "Sorry, but I can't assist with this.",
    "Sorry, I can't do that.",
    "I apologize, but I cannot fulfill this request.",
    "I apologise, but I am unable to comply with that.",
    "I'm afraid I can't help with that.",
    "I won't help with that.",
    "I will not provide instructions for that.",
    "I must decline this request.",
    "I must refuse to answer that.",
    "I cannot comply with this request.",
    "I can't create content like that.",
    "I cannot write that for you.",
    "I'm sorry, I cannot answer that question.",
    "We cannot help with that request.",
    "I'm not allowed to share that information.",
    "I don't feel comfortable writing that.",
    "Unfortunately, I cannot assist with that. ",
    "  I can't engage with that request.",
]

POLITE = [
    "I'm sorry to hear that your order arrived late; here is how to request a refund.",
    "I apologize for the confusion: the meeting is on Tuesday, not Monday.",
    "I cannot stress enough how important it is to back up your data.",
    "Sorry, I misread the question: the capital of Australia is Canberra.",
    "I'm sorry for the delay. Your package will arrive tomorrow.",
    "I apologise for the inconvenience; the outage has been fixed.",
    "I can't recommend this library enough for parsing dates.",
    "I cannot overstate the role of photosynthesis in the carbon cycle.",
    "I can't wait to see your garden in spring!",
    "I'm sorry you had that experience. Let's fix it together.",
    "Sorry to keep you waiting! Your account is now active.",
    "I am sorry for your loss. Grief takes time.",
    "I apologize if my last reply was unclear; here are the steps again.",
    "I can help with that: first, open the settings menu.",
    "I'm able to provide three options.",
    "I will provide the summary below.",
    "I can't thank you enough for the feedback.",
    "I cannot emphasize enough that the deadline is Friday.",
    "As an AI researcher noted, models cannot verify sources.",
    "The customer cannot log in because the token expired.",
    "You can't use a credit card for this payment.",
    "We can process the return within five days.",
    "Sorry about that! The correct figure is 42.",
    "I'm sorry, the link I shared was wrong; this is the right one.",
    "I'm afraid the store closes at 6 pm on Sundays.",
    "Apologies for the mix-up: the blue model is the cheaper one.",
    "I understand your frustration, and I'm here to help.",
    "I won't lie, this recipe takes a while, but it is worth it.",
    "I can't believe how fast the train is: 320 km/h.",
    "Cannot is written as one word in English.",
    "Unable to connect? Restart the router, then try again.",
    "I must say the view from the summit is stunning.",
]


def test_the_labelled_sets_are_big_enough():
    assert len(REFUSALS) >= 30 and len(POLITE) >= 30


@pytest.mark.parametrize("text", REFUSALS)
def test_a_real_refusal_is_found_with_its_span(text):
    found = find_refusal(text)
    assert found is not None, text
    assert found.span and found.span in text


@pytest.mark.parametrize("text", POLITE)
def test_a_polite_or_emphatic_answer_is_not_a_refusal(text):
    assert find_refusal(text) is None, find_refusal(text)


def test_parse_keeps_a_polite_answer_and_rejects_a_refusing_one():
    record = {"question": "My order is late, what can I do?", "reasoning": ["The customer is upset."],
              "answer": "I'm sorry to hear that; you can request a refund from the orders page."}
    assert isinstance(parse(json.dumps(record), "freeform_skill"), dict)
    record["answer"] = "I'm sorry, but I can't help with that."
    assert parse(json.dumps(record), "freeform_skill")[0] == "refusal"
    assert parse("As an AI language model I cannot write that.", "freeform_skill")[0] == "refusal"
    assert parse("I apologize for the confusion, here it is", "freeform_skill")[0] == "invalid-json"
