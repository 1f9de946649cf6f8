// Qminder's own JavaScript SDK (npm qminder-api) against the tests' API simulator: if the
// simulator drifts from Qminder's contract as the SDK reads it, this fails.
// Usage: QMINDER_KEY=… QMINDER_SERVER=127.0.0.1:PORT NODE_EXTRA_CA_CERTS=ca.pem node search.cjs
const Qminder = require('qminder-api');

async function main() {
  Qminder.setKey(process.env.QMINDER_KEY);
  Qminder.setServer(process.env.QMINDER_SERVER); // the SDK always speaks https://
  const locations = await Qminder.locations.list(); // GET /v1/locations/
  const location = locations[0].id;
  const tickets = await Qminder.tickets.search({ location, limit: 10000, order: 'created ASC' });
  const count = await Qminder.tickets.count({ location });
  const webhook = await Qminder.webhooks.create('https://bridge.example.com/webhooks/qminder');
  await Qminder.webhooks.remove(webhook); // the SDK takes numeric ids only
  console.log(JSON.stringify({
    locations: locations.map((l) => l.id),
    tickets: tickets.map((t) => ({ id: t.id, status: t.status, created: t.created && t.created.date })),
    count,
    webhook: { id: webhook.id, secret: typeof webhook.secret, removed: true },
  }));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
