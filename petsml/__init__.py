"""pets-pipeline domain code."""
