"""What a transaction reports: its steps, its outcome, and the Abort that ends it early."""

from typing import Any, Dict, List, Optional

from .records import dataclass, field


@dataclass
class Step:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Outcome:
    result: str  # changed | unchanged | rolled-back | refused | failed | unrestored | not-found | recovered
    exit_code: int
    steps: List[Step] = field(default_factory=list)
    backup: Optional[str] = None
    file: Optional[str] = None
    message: str = ""
    probe: List[Dict[str, Any]] = field(default_factory=list)
    gate: Optional[Dict[str, Any]] = None  # the live gate's verdict (livecheck.Outcome.to_json)

    def to_json(self) -> Dict[str, Any]:
        return {"result": self.result, "exit_code": int(self.exit_code), "file": self.file, "backup": self.backup,
                "message": self.message, "steps": [s.to_json() for s in self.steps], "probe": self.probe,
                "gate": self.gate}


class Abort(Exception):
    """Stop the transaction with this result (raised by steps, handled in `run`)."""

    def __init__(self, result: str, code: int, message: str) -> None:
        super().__init__(message)
        self.result, self.code, self.message = result, code, message
