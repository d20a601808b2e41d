"""The 13 English tasks of LongBench-E (Bai et al., 2023, "LongBench: A Bilingual, Multitask
Benchmark for Long Context Understanding"), as configured by the official THUDM/LongBench
repository: the prompt templates of ``config/dataset2prompt.json``, the generation lengths of
``config/dataset2maxlen.json`` and the metric of each dataset in ``eval.py`` (``dataset2metric``).
A ``_e`` dataset shares the template, length and metric of its LongBench namesake.
"""

from __future__ import annotations

from dataclasses import dataclass

_MULTI_DOC_QA = (
    "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n"
    "The following are given passages.\n{context}\n\n"
    "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n"
    "Question: {input}\nAnswer:"
)
_QASPER_RULES = (
    "as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered "
    'based on the information in the article, write "unanswerable". If the question is a yes/no question, answer '
    '"yes", "no", or "unanswerable". Do not provide any explanation.'
)


@dataclass(frozen=True)
class LongBenchTask:
    name: str  # LongBench-E dataset (hub config name and local file stem)
    prompt: str  # template with {context} and {input}
    max_new_tokens: int  # dataset2maxlen
    metric: str  # a key of metrics.METRICS
    first_line_only: bool = False  # few-shot tasks: only the answer's first line is scored (official eval.py)
    stop_at_newline: bool = False  # samsum: a newline also ends generation (official pred.py)


TASKS: dict[str, LongBenchTask] = {
    task.name: task
    for task in (
        LongBenchTask(
            "qasper_e",
            f"You are given a scientific article and a question. Answer the question {_QASPER_RULES}\n\n"
            f"Article: {{context}}\n\n Answer the question based on the above article {_QASPER_RULES}\n\n"
            "Question: {input}\n\nAnswer:",
            128,
            "qa_f1",
        ),
        LongBenchTask(
            "multifieldqa_en_e",
            "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based "
            "on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
            64,
            "qa_f1",
        ),
        LongBenchTask("hotpotqa_e", _MULTI_DOC_QA, 32, "qa_f1"),
        LongBenchTask("2wikimqa_e", _MULTI_DOC_QA, 32, "qa_f1"),
        LongBenchTask(
            "gov_report_e",
            "You are given a report by a government agency. Write a one-page summary of the report.\n\n"
            "Report:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
            512,
            "rouge_l",
        ),
        LongBenchTask(
            "multi_news_e",
            "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\n"
            "Now, write a one-page summary of all the news.\n\nSummary:",
            512,
            "rouge_l",
        ),
        LongBenchTask(
            "trec_e",
            "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",
            64,
            "classification",
            first_line_only=True,
        ),
        LongBenchTask(
            "triviaqa_e",
            "Answer the question based on the given passage. Only give me the answer and do not output any other "
            "words. The following are some examples.\n\n{context}\n\n{input}",
            32,
            "qa_f1",
            first_line_only=True,
        ),
        LongBenchTask(
            "samsum_e",
            "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",
            128,
            "rouge_l",
            first_line_only=True,
            stop_at_newline=True,
        ),
        LongBenchTask(
            "passage_count_e",
            "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully "
            "read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In "
            "other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final "
            "count of unique paragraphs after removing duplicates. The output format should only contain the number, "
            "such as 1, 2, 3, and so on.\n\nThe final answer is: ",
            32,
            "count",
        ),
        LongBenchTask(
            "passage_retrieval_en_e",
            "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
            "abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of "
            'the paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", '
            "etc.\n\nThe answer is: ",
            32,
            "retrieval",
        ),
        LongBenchTask(
            "lcc_e", "Please complete the code given below. \n{context}Next line of code:\n", 64, "code_sim"
        ),
        LongBenchTask(
            "repobench-p_e",
            "Please complete the code given below. \n{context}{input}Next line of code:\n",
            64,
            "code_sim",
        ),
    )
}

BUCKETS = ("0-4k", "4-8k", "8k+")


def length_bucket(length: int) -> str:
    """LongBench-E's bucket of a sample by its ``length`` field (words of context and input,
    as counted by the dataset, not tokens of the model): [0, 4000), [4000, 8000), [8000, inf)."""
    if length < 4000:
        return "0-4k"
    if length < 8000:
        return "4-8k"
    return "8k+"


# The task categories of the official README's tables, in its column order.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "Single-Doc QA": ("qasper_e", "multifieldqa_en_e"),
    "Multi-Doc QA": ("hotpotqa_e", "2wikimqa_e"),
    "Summarization": ("gov_report_e", "multi_news_e"),
    "Few-shot Learning": ("trec_e", "triviaqa_e", "samsum_e"),
    "Code Completion": ("lcc_e", "repobench-p_e"),
    "Synthetic Tasks": ("passage_count_e", "passage_retrieval_en_e"),
}

# Few-shot and code tasks: the official prediction script never wraps them in a chat template.
NO_CHAT_TEMPLATE = ("trec_e", "triviaqa_e", "samsum_e", "lcc_e", "repobench-p_e")


def official_name(dataset: str) -> str:
    """The file stem of the official prediction and result files: ``gov_report_e`` -> ``gov_report``."""
    return dataset.removesuffix("_e")
