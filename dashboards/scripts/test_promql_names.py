#!/usr/bin/env python3
"""Unit tests of promql_names: run with `python3 -m unittest` in this directory."""

import unittest

from promql_names import (
    aggregations,
    histogram_quantile_arguments,
    label_values_query,
    metric_names,
    selectors,
    substitute_grafana_variables,
)


class MetricNames(unittest.TestCase):
    def test_bare_name(self):
        self.assertEqual(metric_names("up"), {"up"})
        self.assertEqual(metric_names("  delivery_sessions  "), {"delivery_sessions"})

    def test_matchers_are_not_names(self):
        expr = 'consumer_events_total{outcome="dead_lettered", topic=~"users|messages"}'
        self.assertEqual(metric_names(expr), {"consumer_events_total"})

    def test_functions_and_aggregations_are_not_names(self):
        expr = "sum(rate(messaging_sends_total[5m])) + max_over_time(outbox_backlog_rows[1h])"
        self.assertEqual(metric_names(expr), {"messaging_sends_total", "outbox_backlog_rows"})
        self.assertEqual(metric_names("vector(1) + time()"), set())
        self.assertEqual(metric_names("histogram_quantile(0.99, sum by (le) (x_bucket))"), {"x_bucket"})

    def test_grouping_clauses_hold_label_names(self):
        expr = (
            "sum by (job, instance) (a_total) / ignoring(route) group_left(status) "
            "sum without (status) (b_total) and on() c unless on (job) d"
        )
        self.assertEqual(metric_names(expr), {"a_total", "b_total", "c", "d"})
        # The clause may come after the aggregated expression, and in any case.
        self.assertEqual(metric_names("sum(rate(a_total[1m])) BY (job)"), {"a_total"})

    def test_keywords_numbers_and_durations(self):
        expr = "a > bool 0.5 or b offset 10m and c @ 1609746000 unless d * 1e-3 + Inf - NaN"
        self.assertEqual(metric_names(expr), {"a", "b", "c", "d"})

    def test_ranges_and_subqueries(self):
        expr = "max_over_time(rate(a_total[$__rate_interval])[30m:1m]) + deriv(b[5m] offset 1h)"
        self.assertEqual(metric_names(expr), {"a_total", "b"})

    def test_strings_may_hold_anything(self):
        expr = 'label_replace(up{job="x"}, "dst", "$1 (not_a_metric)", "src", "(.*){2}")'
        self.assertEqual(metric_names(expr), {"up"})
        self.assertEqual(metric_names("a{route='/v1/{id}/x'} + b{r=`c(d)`}"), {"a", "b"})

    def test_name_matcher(self):
        self.assertEqual(metric_names('{__name__="outbox_backlog_rows", job="auth"}'), {"outbox_backlog_rows"})

    def test_colons_in_recording_rule_names(self):
        self.assertEqual(metric_names("job:sends:rate5m > 1"), {"job:sends:rate5m"})

    def test_grafana_variables(self):
        expr = 'sum by (instance) (rate(a_total{instance=~"$instance", job=~"${job:regex}"}[$__rate_interval]))'
        self.assertEqual(metric_names(expr), {"a_total"})
        self.assertEqual(
            substitute_grafana_variables(expr, {"instance": "delivery-1"}),
            'sum by (instance) (rate(a_total{instance=~"delivery-1", job=~".*"}[1m]))',
        )
        # Back-references of label_replace are not variables.
        self.assertEqual(substitute_grafana_variables('"$1" "${2}"'), '"$1" "${2}"')

    def test_comments(self):
        self.assertEqual(metric_names("a # and b\n + c"), {"a", "c"})

    def test_quantile_matchers_are_reported(self):
        found = selectors('max by (instance) (x_seconds{quantile="0.99", instance=~"$instance"}) / y')
        self.assertEqual([s.name for s in found], ["x_seconds", "y"])
        self.assertEqual(found[0].labels, frozenset({"quantile", "instance"}))
        self.assertEqual(found[1].labels, frozenset())

    def test_histogram_quantile_arguments(self):
        expr = (
            'histogram_quantile(0.99, sum by (le, route) (rate(x_seconds_bucket{route="/a,b"}[5m]))) '
            "> 0.5 and histogram_quantile(0.5, rate(y_bucket[1m]))"
        )
        self.assertEqual(
            histogram_quantile_arguments(expr),
            ['sum by (le, route) (rate(x_seconds_bucket{route=""}[5m]))', "rate(y_bucket[1m])"],
        )
        self.assertEqual(histogram_quantile_arguments("sum(rate(x_bucket[5m]))"), [])

    def test_aggregations_and_their_clauses(self):
        found = aggregations(
            "sum by (le, job) (rate(a_bucket[5m])) / sum(rate(b[5m])) without (instance) "
            "+ max(c) + max_over_time(d[5m]) + count(e) BY (le)"
        )
        self.assertEqual([(a.op, a.mode, a.labels) for a in found], [
            ("sum", "by", frozenset({"le", "job"})),
            ("sum", "without", frozenset({"instance"})),
            ("max", None, frozenset()),
            ("count", "by", frozenset({"le"})),
        ])
        self.assertTrue(found[0].keeps("le"))
        self.assertTrue(found[1].keeps("le"))
        self.assertFalse(found[2].keeps("le"))
        # A summary's quantile matcher is not the quantile aggregation.
        self.assertEqual(aggregations('x{quantile="0.99"}'), [])

    def test_unbalanced(self):
        with self.assertRaises(ValueError):
            metric_names("rate(a{b=\"c\"[5m])")

    def test_label_values(self):
        self.assertEqual(label_values_query('label_values(up{job="delivery"}, instance)'), 'up{job="delivery"}')
        self.assertEqual(label_values_query("query_result(max by (job) (up))"), "max by (job) (up)")
        self.assertIsNone(label_values_query("label_values(instance)"))
        self.assertIsNone(label_values_query("prometheus"))


if __name__ == "__main__":
    unittest.main()
