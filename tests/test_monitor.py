"""Monitoring on real months: the reference per model, `monitor --data` stays quiet on real later
months and fires on each breakage, exit codes, alerts to a local webhook, corrupt profiles.

The model under watch is fitted in-process on the real January and logged, with its reference on the
real February, into a throw-away MLflow store, once per session (tests/monitor_fixtures.py): what these
tests need is "a champion with a reference", not the papermill pipeline (tests/test_pipeline.py runs
that). Without the real months they skip, saying where they were looked for."""
import http.server
import json
import os
import socketserver
import threading
from pathlib import Path

import pandas as pd
import pytest

from taxi_duration import alerts, monitor, profiles, verdicts
from taxi_duration.core import TaxiDurationError
from taxi_duration.reference import load_reference

pytest_plugins = ['monitor_fixtures']  # the shared fixtures: env, reference, model, raw_march, march_sample, monitored_store

from monitor_fixtures import month, run_cli, sample_file  # noqa: E402  (plain functions)
from scenarios import make_scenario  # noqa: E402
from servers import free_port  # noqa: E402


def test_reference_is_logged_with_the_champion_run(env, reference):
    from taxi_duration.registry import champion, client
    mv = champion()
    assert reference.version == str(mv.version)
    assert reference.run_id == mv.run_id
    names = {Path(a.path).name for a in client().list_artifacts(mv.run_id, 'reference')}
    assert names >= {'train.bin', 'validation.bin', 'metrics.json'}
    assert abs(reference.metrics['rmse'] - float(mv.tags['validation_rmse'])) < 1e-6
    assert profiles.rows(reference.validation, profiles.PREDICTION) == reference.metrics['rows']


@pytest.mark.parametrize('m', ['02', '03'])
def test_real_later_months_stay_quiet(env, tmp_path, m):
    report = tmp_path / f'{m}.html'
    assert run_cli('--data', month(env, m), '--report', str(report)) == 0
    summary = json.loads(report.with_suffix('.json').read_text())
    assert summary['healthy']
    assert summary['alerts'] == []
    assert not (tmp_path / 'monitoring' / 'alerts.jsonl').exists()
    ratio = [c for c in summary['checks'] if c['statistic'] == 'rmse_ratio'][0]['value']
    assert ratio < 1.1


EXPECTED = {  # scenario -> (check, column) pairs that must fire
    'km': {('drift', 'trip_distance'), ('prediction', 'prediction'), ('performance', 'duration')},
    'zones_constant': {('drift', 'PULocationID'), ('drift', 'DOLocationID'), ('performance', 'duration')},
    'zones_scrambled': {('drift', 'PULocationID'), ('drift', 'DOLocationID'), ('performance', 'duration')},
    'missing': {('missing', 'trip_distance'), ('missing', 'PULocationID')},
    'utc_clock': {('drift', 'pickup_hour')},
    'long_rides': {('drift', 'trip_distance'), ('prediction', 'prediction')},
    'slower': {('performance', 'duration')},
    'slower:1.25': {('performance', 'duration')},
}


@pytest.mark.parametrize('scenario', list(EXPECTED))
def test_breakage_fires(env, reference, model, march_sample, scenario):
    res = verdicts.monitor_data(make_scenario(march_sample, scenario), reference, model=model)
    got = {(f.kind, f.column) for f in res.alerts}
    assert EXPECTED[scenario] <= got, (scenario, res.alerts)
    if scenario.startswith('slower'):  # the city slowed down: the inputs did not drift, only the errors tell
        assert [f for f in res.alerts if f.kind != 'performance'] == []


def test_alert_exit_code_log_and_webhook(env, tmp_path, march_sample):
    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers['Content-Length']))))
            self.send_response(200); self.end_headers()
        def log_message(self, *a): pass

    srv = socketserver.TCPServer(('127.0.0.1', 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    data = tmp_path / 'km.parquet'
    make_scenario(march_sample, 'km').to_parquet(data)
    try:
        code = run_cli('--data', str(data), '--report', str(tmp_path / 'r.html'),
                       '--webhook-url', f'http://127.0.0.1:{srv.server_address[1]}/hook')
    finally:
        srv.shutdown(); srv.server_close()
    assert code == 3
    lines = [json.loads(l) for l in (tmp_path / 'monitoring' / 'alerts.jsonl').read_text().splitlines()]
    assert [l['type'] for l in lines] == ['alert', 'delivery']
    assert lines[1]['status'] == 'delivered'
    assert set(lines[0]) == {'type', 'id', 'time', 'model_name', 'model_version', 'source', 'rows', 'fired', 'report'}
    assert set(lines[0]['fired'][0]) == {'check', 'column', 'statistic', 'value', 'threshold', 'note'}
    body = received[0]
    assert 'trip_distance' in body['text']
    assert body['attachments']
    alert = body['alert']
    assert alert['model_version'] == env['version']
    assert alert['source'] == str(data)
    fired = {c['column']: c for c in alert['fired']}
    assert fired['trip_distance']['threshold'] == 0.1
    assert fired['trip_distance']['value'] > 0.1
    html = (tmp_path / 'r.html').read_text()
    assert 'ALERT' in html
    assert html.count('<img') >= 4


def test_unreachable_webhook_is_retried_recorded_and_still_alerts(env, tmp_path, march_sample):
    port = free_port()  # nothing listens there
    data = tmp_path / 'zones.parquet'
    make_scenario(march_sample, 'zones_constant').to_parquet(data)
    code = run_cli('--data', str(data), '--report', str(tmp_path / 'r.html'), '--webhook-url', f'http://127.0.0.1:{port}/x')
    assert code == 3
    lines = [json.loads(l) for l in (tmp_path / 'monitoring' / 'alerts.jsonl').read_text().splitlines()]
    assert lines[0]['type'] == 'alert'
    assert lines[1]['type'] == 'delivery'
    assert lines[1]['status'] == 'failed'
    assert lines[1]['attempts'] == 3
    assert lines[1]['host'] == f'127.0.0.1:{port}'


def test_webhook_from_environment(monkeypatch, tmp_path):
    got = []
    monkeypatch.setattr(alerts, 'post_webhook', lambda url, body, *a: got.append(url) or dict(status='delivered', attempts=1))
    monkeypatch.setenv('ALERT_WEBHOOK_URL', 'http://127.0.0.1:1/hook')
    fired = [verdicts.finding('drift', 'c', 'ks', 0.5, 0.1)]
    result = verdicts.Verdict(kind='data', source='s', model_name='m', model_version='1', model_run_id='r',
                              created='now', rows=5, healthy=False, alerts=fired, findings=fired,
                              thresholds=verdicts.Thresholds(), reference_metrics={}, windows=[])
    rec = alerts.raise_alert(result, tmp_path / 'a.jsonl', echo=lambda s: None)
    assert got == ['http://127.0.0.1:1/hook']
    assert rec['delivery']['status'] == 'delivered'


def test_thresholds_are_configurable(env, tmp_path):
    # a strict RMSE threshold makes real rides (4,000 of March) fire, through a JSON file and on the command line
    march = str(sample_file('03', tmp_path))
    (tmp_path / 't.json').write_text(json.dumps({'rmse_ratio': 0.5}))
    assert run_cli('--data', march, '--thresholds', str(tmp_path / 't.json'), '--report', str(tmp_path / 'a.html')) == 3
    assert run_cli('--data', march, '--threshold', 'mae_ratio=0.5', '--report', str(tmp_path / 'b.html')) == 3
    assert run_cli('--data', march, '--threshold', 'nope=1') == 2


@pytest.mark.parametrize('argv', [[], ['--data', 'x', '--profiles', 'y'], ['--profiles', 'y', '--retrain']])
def test_usage_errors_exit_2(env, argv):
    assert run_cli(*argv) == 2


def test_input_errors_exit_2(env, tmp_path):
    assert run_cli('--data', str(tmp_path / 'missing.parquet')) == 2
    assert run_cli('--profiles', str(tmp_path / 'nowhere')) == 2
    (tmp_path / 'empty').mkdir()
    assert run_cli('--profiles', str(tmp_path / 'empty')) == 2
    assert run_cli('--data', month(env, '03'), '--version', '999') == 2


def test_no_champion_is_a_clear_error(tracking):
    with pytest.raises(TaxiDurationError, match='taxi-duration pipeline'):
        load_reference()


def test_corrupt_and_foreign_profiles_are_reported_and_skipped(env, reference, model, march_sample, tmp_path):
    fr = verdicts.completed_rides(march_sample)
    pred = profiles.score_rides(model, fr)
    good = profiles.profile(profiles.monitor_frame(fr, pred), metadata={'model_version': reference.version})
    d = tmp_path / 'profiles'; d.mkdir()
    (d / 'profile-good.bin').write_bytes(good.serialize())
    blob = good.serialize()
    (d / 'profile-truncated.bin').write_bytes(blob[: len(blob) // 3])
    (d / 'profile-empty.bin').write_bytes(b'')
    (d / 'profile-garbage.bin').write_bytes(b'WHY1' + bytes(range(256)) * 4)
    other = profiles.profile(profiles.monitor_frame(fr, pred * 3), metadata={'model_version': 'other'})
    (d / 'profile-other.bin').write_bytes(other.serialize())
    res = monitor.monitor_profiles(d, reference)
    assert res.healthy
    assert res.rows == len(fr)
    assert res.files == 1
    assert sum('unreadable' in p for p in res.problems) == 3
    assert any('version other left out' in p for p in res.problems)
    assert run_cli('--profiles', str(d), '--report', str(tmp_path / 'p.html')) == 0


def test_data_with_missing_values_is_judged_not_dropped(env, reference, model, march_sample):
    res = verdicts.monitor_data(make_scenario(march_sample, 'missing'), reference, model=model)
    miss = {f.column: f.value for f in res.findings if f.kind == 'missing'}
    assert 0.03 < miss['trip_distance'] < 0.07
    assert res.performance['rows'] < res.rows  # rides with a gap are profiled, not scored


def test_report_escapes_what_it_shows(env, reference, model, raw_march, tmp_path):
    "A hostile source name (a file name is an input) is shown as text in the HTML report, never run."
    from dataclasses import replace
    res = replace(verdicts.monitor_data(raw_march.head(3000), reference, model=model), source='<script>alert(1)</script>')
    html_path, json_path = alerts.write_outputs(res, tmp_path / 'r.html')
    html = html_path.read_text()
    assert '<script>' not in html
    assert '&lt;script&gt;alert(1)&lt;/script&gt;' in html
    assert json.loads(json_path.read_text())['source'] == '<script>alert(1)</script>'


def test_summary_json_has_no_views(env, reference, model, raw_march):
    res = verdicts.monitor_data(raw_march.head(3000), reference, model=model)
    summary = json.loads(res.to_json())
    assert 'views' not in summary
    assert list(summary)[:8] == ['kind', 'source', 'model_name', 'model_version', 'model_run_id', 'created', 'rows', 'healthy']
    assert {'performance', 'window'} <= set(summary)
    assert {'problems', 'files', 'rejected'} & set(summary) == set()
    assert list(summary['checks'][0])[:2] == ['check', 'column']  # the JSON keeps its keys


def test_an_unwritable_report_does_not_swallow_the_alert(env, march_sample, tmp_path):
    "The alert goes out first; a report that cannot be written is a warning, and the exit code still says alert."
    data = tmp_path / 'km.parquet'
    make_scenario(march_sample, 'km').to_parquet(data)
    (tmp_path / 'file').write_text('')
    assert run_cli('--data', str(data), '--report', str(tmp_path / 'file' / 'r.html')) == 3
    lines = (tmp_path / 'monitoring' / 'alerts.jsonl').read_text().splitlines()
    assert [json.loads(l)['type'] for l in lines] == ['alert']


def test_a_month_with_no_ride_to_judge_is_one_line_naming_it(env, raw_march, tmp_path, capsys):
    "Every ride over 60 minutes: nothing to judge, said in one line naming the file (exit 2); no alert, no NaN rows."
    late = tmp_path / 'late.parquet'
    raw_march.assign(dropoff_datetime=raw_march.pickup_datetime + pd.Timedelta(minutes=90)).to_parquet(late)
    assert run_cli('--data', str(late), '--report', str(tmp_path / 'r.html')) == 2
    err = capsys.readouterr().err
    assert f'{late}: no completed rides' in err
    assert not (tmp_path / 'monitoring' / 'alerts.jsonl').exists()


def test_a_file_without_rows_is_named_not_printed(env, raw_march, tmp_path, capsys):
    empty = tmp_path / 'empty.parquet'
    raw_march.head(0).to_parquet(empty)
    assert run_cli('--data', str(empty), '--report', str(tmp_path / 'r.html')) == 2
    err = capsys.readouterr().err
    assert f'{empty}: no completed rides' in err
    assert 'DataFrame' not in err


class _Hook(http.server.BaseHTTPRequestHandler):
    "A webhook on loopback that keeps what it receives."
    received = []

    def do_POST(self):
        self.received.append(json.loads(self.rfile.read(int(self.headers['Content-Length']))))
        self.send_response(200); self.end_headers()

    def log_message(self, *a): pass


def test_an_unwritable_alerts_log_still_alerts_on_screen_and_webhook(env, march_sample, tmp_path):
    """The `taxi-duration monitor` command with --alerts-log where a file stands in for the folder: the alert is
    printed (a short summary, not the raw record), the webhook gets it, the log failure is said, and it exits 3."""
    import subprocess, sys
    from conftest import ROOT
    _Hook.received = []
    srv = socketserver.TCPServer(('127.0.0.1', 0), _Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    data = tmp_path / 'km.parquet'
    make_scenario(march_sample, 'km').to_parquet(data)
    (tmp_path / 'file').write_text('')
    cmd = [str(Path(sys.executable).parent / 'taxi-duration'), 'monitor', '--data', str(data),
           '--report', str(tmp_path / 'r.html'), '--alerts-log', str(tmp_path / 'file' / 'alerts.jsonl'),
           '--webhook-url', f'http://127.0.0.1:{srv.server_address[1]}/hook']
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        srv.shutdown(); srv.server_close()
    assert run.returncode == 3, run.stderr[-2000:]
    [alert] = [l for l in run.stdout.splitlines() if l.startswith('ALERT')]
    assert 'drift trip_distance: ks' in alert
    assert '{' not in alert  # a summary for people; the JSON record is for the log and the webhook
    assert sum(l.startswith('warning: alert') and 'alerts log' in l for l in run.stdout.splitlines()) == 1
    assert len(_Hook.received) == 1
    assert _Hook.received[0]['alert']['source'] == str(data)
