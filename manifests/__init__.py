"""Dataset knowledge: one reader per source into the common manifest schema (`manifests.schema`).

`read_dataset(name, annotations, ...)` is the entry point; `READERS` maps dataset names to readers. Importing this
package is cheap (pyarrow is imported only when a manifest is written or read).
"""
from manifests.readers import READERS, read_dataset

__all__ = ["READERS", "read_dataset"]
