"""The product: encoding videos with a trained model, the index folder, queries by video, the results page."""
