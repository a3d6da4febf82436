"""The table `vtl-pipeline manifest` prints: kept rows, flagged rows by flag, rejections by reason, and the files."""
from __future__ import annotations

import json
from pathlib import Path

_DETAIL_KEYS = ("rows", "kept", "flagged", "rejected")


def summary_table(dataset: str, result, out: Path, errors: Path):
    """`result`: a `manifests.build.ManifestSummary`."""
    from rich.table import Table

    table = Table(title=f"manifest: {dataset}", show_lines=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("[bold]kept rows[/]", str(result.rows))
    table.add_row("  events in kept rows", str(result.events))
    for flag, n in sorted(result.flags.items()):
        table.add_row(f"  [yellow]flagged[/] {flag}", str(n))
    table.add_row("[bold]rejected[/]", str(sum(result.rejections.values())))
    for reason, n in sorted(result.rejections.items()):
        table.add_row(f"  [red]rejected[/] {reason}", str(n))
    for name, value in result.stats.items():
        if name in _DETAIL_KEYS:
            continue
        table.add_row(f"[dim]{name}[/]", json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    table.add_row("manifest", str(out))
    table.add_row("errors", str(errors))
    return table
