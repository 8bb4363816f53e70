"""The Video-ChatGPT GPT-judge protocol for open-ended QA, through any OpenAI-compatible endpoint.

Facts (mbzuai-oryx/Video-ChatGPT ``quantitative_evaluation/evaluate_activitynet_qa.py``,
used unchanged by Video-LLaVA's ``eval_video_qa.py`` for MSVD, MSRVTT, TGIF and ActivityNet):
the judge (gpt-3.5-turbo there) gets a system message and a user message with the question,
the correct answer and the predicted answer, and must reply with a Python dict string
``{'pred': 'yes' or 'no', 'score': 0-5}``, read with ``ast.literal_eval``. Accuracy is
yes / (yes + no) and the score is the mean of ``int(score)`` over every judged answer. The
messages below are the protocol's own wording (a judge prompt is part of the protocol: the
numbers are comparable only with it). The script sets no temperature; neither do we.

``--judge-url`` points at any server speaking ``/v1/chat/completions`` (this project's own
API server, vLLM, a hosted one); ``--judge-model`` names the model there. The API key comes
from ``OPENAI_API_KEY`` (a local server ignores it). The official ``openai`` client does the
HTTP (retries, timeouts).
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass

SYSTEM = ("You are an intelligent chatbot designed for evaluating the correctness of generative outputs for "
          "question-answer pairs. Your task is to compare the predicted answer with the correct answer and determine "
          "if they match meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: "
          "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
          "- Consider synonyms or paraphrases as valid matches.\n"
          "- Evaluate the correctness of the prediction compared to the answer.")
USER = ("Please evaluate the following video-based question-answer pair:\n\n"
        "Question: {question}\nCorrect Answer: {reference}\nPredicted Answer: {prediction}\n\n"
        "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, "
        "with 5 indicating the highest meaningful match. Please generate the response in the form of a Python "
        "dictionary string with keys 'pred' and 'score', where value of 'pred' is  a string of 'yes' or 'no' and "
        "value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only "
        "provide the Python dictionary string. For example, your response should look like this: "
        "{{'pred': 'yes', 'score': 4.8}}.")
_DICT = re.compile(r"\{.*?\}", re.S)


@dataclass
class JudgeVerdict:
    yes: bool | None  # None: the reply said neither yes nor no (left out of the accuracy)
    score: int | None
    raw: str = ""
    error: str = ""


def parse_reply(text: str) -> JudgeVerdict:
    """Read the judge's dict string (the first ``{...}`` when it wrote more around it)."""
    match = _DICT.search(text)
    try:
        value = ast.literal_eval(match.group(0) if match else text.strip())
        pred, score = str(value["pred"]).lower(), int(float(value["score"]))
    except (ValueError, SyntaxError, KeyError, TypeError) as err:
        return JudgeVerdict(None, None, raw=text, error=f"unreadable judge reply ({type(err).__name__})")
    # The script's order: "yes" anywhere first, then "no".
    yes = True if "yes" in pred else False if "no" in pred else None
    return JudgeVerdict(yes, score, raw=text)


class Judge:
    """Ask an OpenAI-compatible chat endpoint for the protocol's verdict on one answer.

    Args:
        url: base URL of the API, e.g. ``http://127.0.0.1:8000/v1``.
        model: the judge model's name on that server.
        attempts: replies read again on an unreadable reply (the script loops until readable).
    """

    def __init__(self, url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 attempts: int = 3):
        from openai import OpenAI

        if not url or not model:
            raise ValueError("the judge needs both --judge-url and --judge-model")
        self.url, self.model, self.attempts = url, model, max(1, attempts)
        self.client = OpenAI(base_url=url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
                             timeout=timeout, max_retries=2)

    def __call__(self, question: str, reference: str, prediction: str) -> JudgeVerdict:
        from openai import OpenAIError

        messages = [{"role": "system", "content": SYSTEM},
                    {"role": "user", "content": USER.format(question=question, reference=reference,
                                                            prediction=prediction)}]
        verdict = JudgeVerdict(None, None, error="no reply")
        for _ in range(self.attempts):
            try:
                reply = self.client.chat.completions.create(model=self.model, messages=messages)
            except OpenAIError as err:
                return JudgeVerdict(None, None, error=f"judge request failed: {err}")
            verdict = parse_reply(reply.choices[0].message.content or "")
            if not verdict.error:
                return verdict
        return verdict
