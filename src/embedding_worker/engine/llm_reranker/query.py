"""What an LLM reranker's query carries, without torch (the service imports it)."""

from __future__ import annotations


class RerankQuery(str):
    """A query with the instruction to score it under (None: the model's default): the string
    passes through Infinity's queue as it is, so the reranker can read it."""

    instruction: str | None

    def __new__(cls, query: str, instruction: str | None = None) -> RerankQuery:
        made = super().__new__(cls, query)
        made.instruction = instruction
        return made
