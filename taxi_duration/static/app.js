// The page of the taxi-duration service: zone pickers from GET /zones, predictions from POST /predict.
'use strict';
const $ = (id) => document.getElementById(id);
let boroughs = [];

function fillZones(boroughSelect, zoneSelect) {
  const b = boroughs.find((x) => x.name === boroughSelect.value);
  zoneSelect.replaceChildren(...(b ? b.zones : []).map((z) => new Option(z.name, String(z.id))));
}

function setupPicker(prefix, borough, zoneId) {
  const bs = $(prefix + '-borough'), zs = $(prefix + '-zone');
  bs.replaceChildren(...boroughs.map((b) => new Option(b.name, b.name)));
  bs.value = borough;
  fillZones(bs, zs);
  zs.value = String(zoneId);
  bs.addEventListener('change', () => fillZones(bs, zs));
}

function nowLocal() {  // the current New York time as a datetime-local value
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone: 'America/New_York', hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit'}).formatToParts(new Date()).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

async function predict(event) {
  event.preventDefault();
  showError('');
  const ride = {
    PULocationID: parseInt($('pu-zone').value, 10),
    DOLocationID: parseInt($('do-zone').value, 10),
    trip_distance: $('distance').value === '' ? null : Number($('distance').value),
  };
  if ($('pickup').value) ride.pickup_datetime = $('pickup').value;
  $('predict').disabled = true;
  $('result').textContent = '…';
  try {
    const r = await fetch('/predict', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(ride)});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    $('result').textContent = `≈ ${body.duration.toFixed(1)} minutes`;
    $('result').dataset.minutes = String(body.duration);
    $('model').textContent = `version ${body.model_version}`;
  } catch (e) {
    $('result').textContent = '';
    showError(e.message);
  } finally {
    $('predict').disabled = false;
  }
}

async function main() {
  $('pickup').value = nowLocal();
  $('ride').addEventListener('submit', predict);
  try {
    const [zones, health] = await Promise.all([fetch('/zones').then((r) => r.json()), fetch('/health').then((r) => r.json())]);
    boroughs = zones.boroughs;
    setupPicker('pu', 'Manhattan', 43);   // Central Park
    setupPicker('do', 'Manhattan', 151);  // Manhattan Valley
    $("model").textContent = `version ${health.model_version}`;
    document.body.dataset.ready = 'true';
  } catch (e) {
    showError(`cannot load the zone list: ${e.message}`);
  }
}

document.addEventListener('DOMContentLoaded', main);
