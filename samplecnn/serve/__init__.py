"""``samplecnn serve``: a REST API and a web page to tag audio and run trainings.

app: the FastAPI application; batching: one model shared by concurrent requests;
uploads: receiving audio safely; jobs: trainings as train.py subprocesses; static/: the page.
Needs the ``serve`` extra (fastapi, uvicorn, python-multipart, fastapi-offline).
"""
