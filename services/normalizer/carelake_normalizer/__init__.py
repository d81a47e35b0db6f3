"""normalizer: raw messages and files to validated FHIR R4 resources."""
