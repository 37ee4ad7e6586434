"""What ``rssr prepare`` kept and rejected, and why: one :class:`SourceReport` per pair (or HR raster), gathered in a
:class:`PrepareReport` that the CLI prints and writes beside the patch cache."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SourceReport:
    """What happened to one pair (real) or one HR raster (synthetic)."""

    hr: str
    lr: str | None = None
    status: str = "rejected"
    reason: str = ""
    patches: int = 0
    rejected_patches: dict[str, int] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    #: One line each: what a rejection measured and the option that would accept it (``--max-shift 5``).
    hints: list[str] = field(default_factory=list)


@dataclass
class PrepareReport:
    sources: list[SourceReport]
    options: dict[str, Any]

    @property
    def patches(self) -> int:
        return sum(s.patches for s in self.sources)

    def to_dict(self) -> dict[str, Any]:
        rejected: Counter[str] = Counter()
        for s in self.sources:
            rejected.update(s.rejected_patches)
        return {
            "patches": self.patches,
            "sources_kept": sum(s.status == "kept" for s in self.sources),
            "sources_rejected": sum(s.status != "kept" for s in self.sources),
            "rejected_patches": dict(rejected),
            "sources": [asdict(s) for s in self.sources],
            "options": self.options,
        }

    def lines(self) -> list[str]:
        """A short human-readable account (the CLI prints it; the library does not)."""
        d = self.to_dict()
        out = [f"{d['patches']} patches from {d['sources_kept']} source(s); {d['sources_rejected']} rejected"]
        for s in self.sources:
            name = f"{Path(s.lr).name} x {Path(s.hr).name if s.hr else '-'}" if s.lr else Path(s.hr).name
            if s.details.get("hr_zoom", 1) != 1:
                name += f" at hr_zoom {s.details['hr_zoom']:g}"
            if s.status == "kept":
                extra = ", ".join(f"{k}: {v}" for k, v in sorted(s.rejected_patches.items()))
                out.append(f"  kept {name}: {s.patches} patches" + (f" (skipped {extra})" if extra else "")
                           + "".join(f"; {hint}" for hint in s.hints))
            else:
                out.append(f"  rejected {name}: {s.reason}")
        return out
