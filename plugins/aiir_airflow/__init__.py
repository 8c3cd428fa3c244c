"""Airflow adapters for aiir: operators, hooks, notifiers, Asset definitions.

Thin by design: every decision is made by the ``aiir`` core library; these classes only fetch
connections, render templates, move results through XCom and map aiir errors to Airflow's.
"""
