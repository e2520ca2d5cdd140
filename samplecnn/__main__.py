"""``python -m samplecnn COMMAND ...``: the same as the ``samplecnn`` console script."""
from samplecnn.cli import main

main()
