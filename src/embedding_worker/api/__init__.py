"""The wire formats: request and response schemas, job input normalisation."""
