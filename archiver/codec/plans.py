"""A per-schema cache of native-codec plans, shared by the native decoder and encoder."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

Plan = TypeVar("Plan")


class PlanCache(Generic[Plan]):
    """Builds a plan once per writer schema; None records that the native path is not for it."""

    def __init__(self, build: Callable[[Any], Plan], refusals: tuple[type[Exception], ...], what: str,
                 limit: int = 256):
        self._build, self._refusals, self._what, self._limit = build, refusals, what, limit
        self._plans: dict[str, Plan | None] = {}

    def get(self, schema: Any) -> Plan | None:
        key = self.key(schema)
        if key in self._plans:
            return self._plans[key]
        if len(self._plans) >= self._limit:
            self._plans.clear()
        try:
            plan = self._build(schema)
        except self._refusals as exc:
            logger.info("native Avro %s not used for record schema %s: %s", self._what, _name(schema), exc)
            plan = None
        self._plans[key] = plan
        return plan

    def clear(self) -> None:
        self._plans.clear()

    def disable(self, schema: Any) -> None:
        """Stop using the native path for `schema` (e.g. after it disagreed with the reference)."""
        self._plans[self.key(schema)] = None

    @staticmethod
    def key(schema: Any) -> str:
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError:
                return schema
        return json.dumps(schema, sort_keys=True, default=repr)


def _name(schema: Any) -> str:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            return "?"
    return schema.get("name", "?") if isinstance(schema, dict) else "?"
