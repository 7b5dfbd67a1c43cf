"""The faces: the formats the gateway answers free/busy questions in.

Each face turns a request into a window and addresses, asks an engine, and
renders the answer.  Faces import the model and engines, never each other.
"""
