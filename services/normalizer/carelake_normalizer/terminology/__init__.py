"""Terminology normalization: ICD-9 -> ICD-10-CM, NDC -> RxNorm, local codes -> LOINC / CPT / HCPCS,
and validation of every coded value, over versioned code maps loaded once per process.

``normalize_resource(resource, source)`` is the pass (see :mod:`.normalize`); :mod:`.maps` holds
the maps, :mod:`.load` turns official release files (RxNorm RRF, LOINC CSV, FDA NDC Directory) into
operator maps, and ``SOURCES.md`` says what every map and package really contains.
"""

from .maps import MapInfo, MapStore, default_store
from .normalize import FLAG_NAMES, FLAGS_TOTAL, CodeFlag, codeable_concepts, normalize_resource

__all__ = [
    "FLAGS_TOTAL", "FLAG_NAMES", "CodeFlag", "MapInfo", "MapStore", "codeable_concepts", "default_store",
    "normalize_resource",
]
