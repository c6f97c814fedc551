"""What a web ACL inspects, compiled once per Snapshot: one slot per field and transformation prefix.

WAF applies a statement's text transformations in order before it matches (AWS WAF Developer Guide, "Text
transformation options"); rules of one ACL often inspect the same field with the same chain (every path
guard with URL_DECODE then LOWERCASE) or with chains sharing a prefix. The plan gives each distinct
(field, header, transformations so far) a slot: a chain's slot points at its prefix's slot and adds one
transformation, and the raw field is the slot with no transformation. During an evaluation a request keeps
the slots' values in a list (``WafRequest.values``), computed on first use, so a request pays for a field
only when a rule reaches a statement that inspects it, and for each transformation of it at most once.
"""

from __future__ import annotations

from lbd.waf.request import FIELD_KINDS, SINGLE_HEADER, UNSET, FieldKey, WafRequest
from lbd.waf.transforms import TRANSFORMS, Transform


class FieldSource:
    """How to get one slot's value: the raw field (``parent`` -1), or ``transform`` of the parent's."""

    def __init__(self, kind: int, header: bytes, parent: int, transform: Transform | None) -> None:
        self.kind = kind
        self.header = header
        self.parent = parent
        self.transform = transform
        # Most transformations leave an empty field empty (a request without a query string, the common
        # case): found once here, so an empty value skips the call (MD5 is the exception).
        self.keeps_empty = transform is not None and transform(b"") == b""


class FieldPlan:
    """The slots of one web ACL's fields (an extension type when compiled: plan.pxd)."""

    def __init__(self) -> None:
        self.sources: list[FieldSource] = []
        self.blank: list[object] = []  # a request's values before anything is computed
        self._slots: dict[FieldKey, int] = {}

    def slot(self, key: FieldKey) -> int:
        """The slot of a field after its chain (NONE already dropped: transforms.chain), added if new."""
        found = self._slots.get(key)
        if found is not None:
            return found
        name, header, chain = key
        if chain:
            source = FieldSource(0, b"", self.slot((name, header, chain[:-1])), TRANSFORMS[chain[-1]])
        else:
            source = FieldSource(FIELD_KINDS.get(name, SINGLE_HEADER), header or b"", -1, None)
        self.sources.append(source)
        self.blank.append(UNSET)
        index = self._slots[key] = len(self.sources) - 1
        return index

    def begin(self, request: WafRequest) -> None:
        """Fresh values for an evaluation (a request may be evaluated again, or by another ACL)."""
        request.values = self.blank[:]

    def value(self, request: WafRequest, index: int) -> bytes | None:
        """The slot's value for this request (None: the request has no such field), computed once."""
        values = request.values
        found = values[index]
        if found is not UNSET:
            return found  # type: ignore[return-value]
        source = self.sources[index]
        if source.parent < 0:
            found = request.raw(source.kind, source.header)
        else:
            found = self.value(request, source.parent)
            if found is not None and (found or not source.keeps_empty):
                found = source.transform(found)  # type: ignore[misc]
        values[index] = found
        return found
