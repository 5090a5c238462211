"""Each LLM reranker family's prompt, as its model card scores pairs: data, not code.

The pair is `prefix + tokens(pair text) + suffix`, where the pair text is `pair` filled with
the instruction, query and document and cut (longest first) so that the whole fits
`max_length`; the score is the probability of the `yes` token against the `no` token at the
last position: sigmoid(logit(yes) - logit(no)), the model card's softmax over the two.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    prefix: str
    pair: str  # with {instruction}, {query} and {document}
    suffix: str
    yes: str
    no: str
    instruction: str  # when the request and the deployment give none
    max_length: int


QWEN3 = Family(
    name="Qwen3-Reranker",
    prefix=("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
            'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'),
    pair="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    yes="yes",
    no="no",
    instruction="Given a web search query, retrieve relevant passages that answer the query",
    max_length=8192,
)

FAMILIES = {"qwen3": QWEN3}  # by config.json's model_type
