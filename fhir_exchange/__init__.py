"""fhir-exchange: an HL7 FHIR R4 (4.0.1) server for remote-consultation exchange between hospitals."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"

# Before any submodule is imported: the compiled validator modules, when built and current (native.py).
from fhir_exchange import native as _native  # noqa: E402

_native.install()
