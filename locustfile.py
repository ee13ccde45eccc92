"""Locust entry: the suite's tier users (one class per tier of the Plan), scenarios, ledger and web UI tab.

    locust -f locustfile.py -H http://gateway                                  # web UI: pick a scenario, or none
    locust -f locustfile.py --headless -H URL -u 20 -r 5 -t 2m --tier-weights premium=3,free=1 --pattern steady:2/s
    locust -f locustfile.py --headless -H URL --scenario seed-demo             # a named scenario
    locust -f locustfile.py,mine.py ...                                        # plus your own TierUser subclasses
"""
from users.entry import *  # noqa: F403
