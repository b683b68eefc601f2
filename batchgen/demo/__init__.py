"""The offline demo's data and scripted conversation (make demo). Used by management commands only;
the product imports nothing from here.
"""
