"""Each LLM reranker family's prompt, as its own scoring code lays pairs out: data, not code.

A pair is `prefix`, then each of `pieces` filled with the instruction, query and document
and tokenized on its own (as the family's code tokenizes them), then `suffix`. The request's
text is tokenized as text (`split_special_tokens`): a document that spells out the
template's special tokens cannot close the prompt and write its own answer. Qwen3's one
formatted string is two pieces here, split where its tokenizer splits words anyway (before
the space that opens the document), so that the query's piece is tokenized once per request.
When the whole is longer than `max_length` (or the model's positions), the query's piece is
cut first to its share (`scorer.QUERY_SHARE`), keeping the text after the query, then the
document's piece from its end.
`{instruction}` is `instruction_format` filled with the request's, the deployment's or the
family's instruction, or nothing when there is none. The score is the probability of the
`yes` token against the `no` token at the last position: sigmoid(logit(yes) - logit(no)),
the families' softmax over the two.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # as MODEL_KINDS names it
    title: str  # as people know it
    prefix: str
    pieces: tuple[str, ...]  # with {instruction}, {query} and {document}
    suffix: str
    yes: str
    no: str
    instruction: str | None  # when the request and the deployment give none
    max_length: int
    instruction_format: str = "{instruction}"
    special_tokens: bool = False  # pieces tokenized with the tokenizer's own special tokens, as its code does

    @property
    def document_piece(self) -> int:
        return next(i for i, piece in enumerate(self.pieces) if "{document}" in piece)

    @property
    def query_piece(self) -> int:
        return next(i for i, piece in enumerate(self.pieces) if "{query}" in piece)


QWEN3 = Family(
    name="qwen3-reranker",
    title="Qwen3-Reranker",
    prefix=("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
            'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'),
    pieces=("<Instruct>: {instruction}\n<Query>: {query}\n<Document>:", " {document}"),
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    yes="yes",
    no="no",
    instruction="Given a web search query, retrieve relevant passages that answer the query",
    max_length=8192,
    special_tokens=True,  # the model card's `tokenizer(pairs, ...)` (Qwen3's tokenizer adds none)
)

MXBAI_V2 = Family(
    name="mxbai-rerank-v2",
    title="mxbai-rerank-v2",
    prefix=("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n"),
    pieces=("{instruction}query: {query}", "\n", "document: {document}", "\n",
            "You are a search relevance expert who evaluates how well documents match search queries. For each "
            "query-document pair, carefully analyze the semantic relationship between them, then provide your "
            "binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"),
    suffix="<|im_end|>\n<|im_start|>assistant\n",
    yes="1",
    no="0",
    instruction=None,
    instruction_format="instruction: {instruction}\n",
    max_length=8192,
)

FAMILIES = {family.name: family for family in (QWEN3, MXBAI_V2)}
BY_MODEL_TYPE = {"qwen3": QWEN3, "qwen2": MXBAI_V2}  # config.json's model_type, for recognition from files
