"""Post-generation attribution: each uncited answer sentence gets the passage that bears it out, and a
sentence no passage supports gets nothing."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from model.attribution import attribute, content_terms
from model.prompting import check_citations, sentences

PASSAGES = [
    "policy.md, Travel policy\nEmployees book economy class for flights under six hours.",
    "policy.md, Expenses\nMeals are reimbursed up to 40 euros per day. Hotel nights are capped at 150 euros.",
    "it.md, IT\nThe VPN server is vpn.example.com. Passwords expire every 90 days.",
]


@pytest.mark.parametrize(
    "answer",
    [
        "Meals are reimbursed up to 40 euros per day.",  # copied from passage 2
        "You can claim up to 40 euros a day for meals.",  # paraphrased
        "Meals are reimbursed up to forty euros per day.",  # the number in words
    ],
)
def test_sentence_from_passage_2_is_cited_2(answer):
    result = attribute(answer, PASSAGES)
    assert result.attributed == [2]
    assert result.text == answer[:-1] + " [2]."
    assert result.unsupported == []


@pytest.mark.parametrize(
    "answer",
    [
        "The office opens at 8 am on Mondays.",  # nothing of it is in any passage
        "Meals are reimbursed up to 50 euros per day.",  # passage 2's words, but not its number
        "Yes.",  # claims nothing
    ],
)
def test_sentence_no_passage_supports_gets_no_citation(answer):
    result = attribute(answer, PASSAGES)
    assert result.attributed == [] and result.text == answer


def test_each_sentence_gets_its_own_passage_and_cited_ones_are_left_alone():
    answer = (
        "Book economy class for flights under six hours [1]. Meals are reimbursed up to 40 euros per day. "
        "The canteen serves fish on Fridays. Passwords expire every 90 days."
    )
    result = attribute(answer, PASSAGES)
    assert result.text == (
        "Book economy class for flights under six hours [1]. Meals are reimbursed up to 40 euros "
        "per day [2]. The canteen serves fish on Fridays. Passwords expire every 90 days [3]."
    )
    assert result.attributed == [2, 3]
    assert result.unsupported == ["The canteen serves fish on Fridays."]
    assert [s.ref for s in result.sentences] == [None, 2, None, 3]
    assert result.sentences[0].cited == (1,)


def test_a_line_of_citations_cites_the_sentence_above_it():
    answer = "Meals are reimbursed up to 40 euros per day\n[2]"
    assert attribute(answer, PASSAGES).text == answer


def test_abbreviation_does_not_split_a_sentence():
    passages = ["history.md\nThe U.S. Army was founded in 1775 by the Continental Congress."]
    result = attribute("The U.S. Army was founded in 1775.", passages)
    assert result.text == "The U.S. Army was founded in 1775 [1]."


def test_wrong_model_citation_is_removed_then_the_supporting_passage_is_cited():
    """check_citations still removes the model's unsupported [1] (and reports it); attribution then cites
    the passage that holds the sentence, and leaves the unsupported sentence without any citation."""
    answer = "Passwords expire every 90 days [1]. The moon is made of cheese [2]."
    checked = check_citations(answer, passages=PASSAGES)
    assert checked.unsupported == [1, 2] and checked.cited == []
    assert checked.text == "Passwords expire every 90 days. The moon is made of cheese."
    result = attribute(checked.text, PASSAGES)
    assert result.text == "Passwords expire every 90 days [3]. The moon is made of cheese."
    assert result.attributed == [3]


def test_attributed_citations_survive_the_citation_check():
    answer = "Economy class on short flights. Meals up to 40 euros a day. Hotels: 150 euros a night."
    result = attribute(answer, PASSAGES)
    assert result.attributed == [1, 2]
    again = check_citations(result.text, passages=PASSAGES)
    assert again.unsupported == [] and again.removed == [] and again.cited == [1, 2]


def test_short_answer_goes_to_the_passage_that_also_has_what_was_asked():
    passages = [
        "Broncos history\nThe Denver Broncos were founded in 1960 and play in Denver.",
        "Super Bowl 50\nThe Denver Broncos defeated the Carolina Panthers 24-10 to win Super Bowl 50.",
    ]
    assert attribute(
        "The Denver Broncos.", passages, question="Which team won Super Bowl 50?"
    ).attributed == [2]
    # Without the question a bare name is borne out by any passage that has it: the first one.
    assert attribute("The Denver Broncos.", passages).attributed == [1]
    # A short answer no passage has, or one whose passages do not touch the question, is not cited.
    assert attribute("Carolina.", passages, question="Where is the head office of the bank?").attributed == []


def test_chinese_answer_is_cited_by_character_terms():
    passages = [
        "公司手册\n员工出差乘坐经济舱，飞行时间超过六小时可以乘坐商务舱。",
        "报销制度\n餐费每天最多报销四十欧元，住宿每晚不超过一百五十欧元。",
        "信息技术\n密码每90天过期一次，VPN服务器地址是vpn.example.com。",
    ]
    result = attribute("餐费每天最多可以报销四十欧元。密码每90天过期。食堂周五供应鱼。", passages)
    assert result.text == "餐费每天最多可以报销四十欧元[2]。密码每90天过期[3]。食堂周五供应鱼。"
    assert result.unsupported == ["食堂周五供应鱼。"]
    # A short answer with the question (a one-character term "号" matches inside the passage's words).
    short = attribute(
        "10号。",
        ["球员\n他在抚顺新野队期间身披10号球衣。", "球队\n抚顺新野队成立于1999年。"],
        question="他在抚顺新野队期间身披几号球衣？",
    )
    assert short.attributed == [1]


def test_chinese_particles_are_not_content_terms():
    """CMRC 2018: "后卫" and "赵鹏的职业是后卫。" went uncited although the passage says it, because bigrams that
    straddle a particle ("鹏的", "的职", "业是") counted as terms no passage holds."""
    from model.prompting import support

    passages = [
        "赵鹏\n赵鹏，中国足球运动员，司职后卫，现效力于河南建业。",
        "河南建业\n河南建业足球俱乐部成立于1994年。",
    ]
    question = "赵鹏的职业是什么？"
    assert attribute("后卫", passages, question=question).attributed == [1]
    assert attribute("赵鹏的职业是后卫。", passages, question=question).text == "赵鹏的职业是后卫[1]。"
    assert support("赵鹏的职业是后卫。", passages[0]) == pytest.approx(2 / 3)  # 赵鹏, 职业, 后卫
    # a claim the passage does not bear out stays uncited
    assert attribute("赵鹏的职业是守门员。", passages, question=question).attributed == []


def test_chinese_answer_over_english_passages_is_not_cited():
    assert attribute("餐费每天最多报销欧元。", PASSAGES).attributed == []


def test_number_words_are_read_as_numbers():
    assert content_terms("five solo tackles and twenty-five yards") >= {"5", "25", "solo", "tackl"}
    assert "one" in content_terms("one of the teams")  # "one" stays a word


def test_embedding_breaks_a_close_call_and_is_not_called_otherwise(embedder):
    """Two passages with every word of the sentence: the store's embedder tells which one says it."""
    passages = [
        "Geography\nInterest in the river bank rose after the rates of erosion were raised by the floods.",
        "Economy\nThe central bank raised interest rates by half a point.",
    ]
    calls: list[list[str]] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return embedder.encode(texts)

    sentence = "The bank raised interest rates."
    assert attribute(sentence, passages).attributed == [1]  # a tie on words: the first passage
    assert attribute(sentence, passages, embed=embed).attributed == [2]
    assert calls == [[sentence, *passages]]
    calls.clear()
    assert attribute("Passwords expire every 90 days.", PASSAGES, embed=embed).attributed == [3]
    assert calls == []  # one passage supports it: nothing to embed


def test_embedder_returning_the_wrong_number_of_vectors_is_an_error():
    passages = ["a\nThe Broncos won the game.", "b\nThe Broncos won the game again."]
    with pytest.raises(ValueError, match="vectors"):
        attribute(
            "The Broncos won the game.", passages, embed=lambda texts: np.ones((1, 4), dtype=np.float32)
        )


def test_min_support_below_the_citation_check_is_refused():
    with pytest.raises(ValueError, match="check_citations"):
        attribute("x", PASSAGES, min_support=0.1)


# --- real passages -------------------------------------------------------------------------------------------
def _answer_sentence(context: str, start: int) -> str:
    offset = 0
    for piece in sentences(context):
        if offset <= start < offset + len(piece):
            return piece.strip()
        offset += len(piece)
    return context


def _real_cases(path: Path, n: int, seed: int = 7) -> list[tuple[str, str, list[str], int, str]]:
    """(question, answer sentence, 5 passages, gold index, a sentence of an article not shown) per question:
    the gold paragraph among 4 paragraphs of other articles."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    rng = random.Random(seed)
    out = []
    for a, article in enumerate(data[:n]):
        paragraph = article["paragraphs"][0]
        qa = paragraph["qas"][0]
        others = [i for i in range(len(data)) if i != a]
        picked = rng.sample(others, 5)
        chosen = [a, *picked[:4]]
        rng.shuffle(chosen)
        passages = [f"{data[i].get('title', '')}\n{data[i]['paragraphs'][0]['context']}" for i in chosen]
        answer = qa["answers"][0]
        sentence = _answer_sentence(paragraph["context"], int(answer["answer_start"]))
        control = next(
            (
                s.strip()
                for s in sentences(data[picked[4]]["paragraphs"][0]["context"])
                if len(s.strip()) > 30
            ),
            "",
        )
        out.append((qa["question"], sentence, passages, chosen.index(a), control))
    return out


@pytest.mark.parametrize(
    "name, file", [("squad", "squad_v1.1_dev/dev-v1.1.json"), ("cmrc", "cmrc2018_dev/cmrc2018_dev.json")]
)
def test_real_answer_sentences_are_cited_to_their_paragraph(shared_data, name, file):
    path = shared_data / file
    if not path.is_file():
        pytest.skip(f"{path} not available")
    cases = _real_cases(path, 40)
    right = sum(attribute(s, p, question=q).attributed == [g + 1] for q, s, p, g, _ in cases)
    assert right >= 0.9 * len(cases), f"{name}: {right} of {len(cases)} cited to the gold paragraph"
    wrongly = sum(bool(attribute(c, p, question=q).attributed) for q, _, p, _, c in cases if c)
    assert wrongly <= 1, f"{name}: {wrongly} sentences of articles not shown were given a citation"


def test_real_squad_sentence_paraphrased_keeps_its_citation(shared_data):
    path = shared_data / "squad_v1.1_dev" / "dev-v1.1.json"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    question, sentence, passages, gold, _ = _real_cases(path, 1)[0]
    # Super Bowl 50's first question: its sentence without the parenthesised abbreviations.
    shorter = re.sub(r"\s*\([A-Z]+\)", "", sentence)
    assert shorter != sentence
    assert attribute(shorter, passages, question=question).attributed == [gold + 1]
