"""Date and time formats for English pages, the admin's included.

Django's own "en" formats ("Nov. 28, 2026, 3:15 a.m.") win over the DATETIME_FORMAT
setting, so the dashboard's one format (24-hour, zone named) is set here and picked
up through FORMAT_MODULE_PATH = ["botplatform.formats"].
"""

DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s T"
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
