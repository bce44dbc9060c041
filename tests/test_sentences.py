"""How a request is split into the sentences that are searched on their own."""

from __future__ import annotations

from tools.sentences import MAX_SENTENCES, search_texts, split_request


def test_a_request_splits_at_sentence_ends_and_line_breaks() -> None:
    text = "Find the GCD of 12 and 18. What is the weather in Paris?\nBook a table for two!"
    assert split_request(text) == [
        "Find the GCD of 12 and 18",
        "What is the weather in Paris?",
        "Book a table for two!",
    ]


def test_linking_words_are_dropped_from_the_start_of_a_sentence() -> None:
    text = "Convert 5 euros to dollars. Also, convert 10 miles to km. After that, tell a joke now."
    assert split_request(text) == [
        "Convert 5 euros to dollars",
        "convert 10 miles to km",
        "tell a joke now",
    ]


def test_sentences_of_fewer_than_three_words_are_left_out() -> None:
    assert split_request("Thanks! Mr. Smith needs a taxi to the airport.") == [
        "Smith needs a taxi to the airport"
    ]


def test_a_quoted_request_and_a_quote_closing_a_sentence_do_not_stick_to_the_text() -> None:
    text = "\"Play the song 'Yesterday.' Then set a timer for ten minutes.\""
    assert split_request(text) == ["Play the song 'Yesterday", "set a timer for ten minutes"]


def test_a_decimal_point_does_not_end_a_sentence() -> None:
    assert split_request("Set the rate to 0.25 for each trial in the run") == [
        "Set the rate to 0.25 for each trial in the run"
    ]


def test_at_most_max_sentences_are_kept() -> None:
    text = " ".join(f"Do task number {i} now." for i in range(MAX_SENTENCES + 3))
    assert split_request(text) == [f"Do task number {i} now" for i in range(MAX_SENTENCES)]


def test_a_request_of_one_sentence_is_searched_alone() -> None:
    assert search_texts("Find the GCD of 12 and 18. Thanks!") == [
        "Find the GCD of 12 and 18. Thanks!"
    ]


def test_a_request_of_several_sentences_is_searched_whole_and_by_sentence() -> None:
    text = "Find the GCD of 12 and 18. What is the weather in Paris?"
    sentences = ["Find the GCD of 12 and 18", "What is the weather in Paris?"]
    assert search_texts(text) == [text, *sentences]
