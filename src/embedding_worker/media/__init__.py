"""Images and audio in requests: fetched safely, decoded for the model."""
