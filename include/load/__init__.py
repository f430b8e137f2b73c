"""Loading a business's files or warehouse tables into the ``raw_*`` input contract.

``python -m include.load --mapping mapping.toml`` (see :mod:`include.load.mapping`
for the file format and :mod:`include.load.loader` for what is converted).
"""

from include.load.loader import LoadResult, load_mapping
from include.load.mapping import Mapping, MappingError, TableMapping, read_mapping

__all__ = ["LoadResult", "Mapping", "MappingError", "TableMapping", "load_mapping", "read_mapping"]
