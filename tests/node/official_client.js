// Drives bcproxy with BigCommerce's official Node client (node-bigcommerce), as an app would.
//
// The client always dials api.bigcommerce.com:443, so, as README "Node (node-bigcommerce)"
// says, its `agent` dials the proxy's HTTPS listener instead.
//
// Environment: BCPROXY_PORT (the proxy's HTTPS port on 127.0.0.1), BCPROXY_CA (the CA that
// signed its certificate, for "localhost"), BCPROXY_TOKEN (the app's [[clients]] token, sent
// as X-Auth-Token), BCPROXY_STORE_HASH. Prints "ok" and exits 0 when every step behaved.
'use strict';

const assert = require('assert');
const fs = require('fs');
const https = require('https');
const tls = require('tls');
const BigCommerce = require('node-bigcommerce');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const agent = new https.Agent({ keepAlive: true });
agent.createConnection = (options, done) =>
  tls.connect(
    {
      ...options,
      host: '127.0.0.1',
      port: Number(env('BCPROXY_PORT')),
      servername: 'localhost',
      ca: fs.readFileSync(env('BCPROXY_CA')),
    },
    done
  );

const client = (apiVersion) =>
  new BigCommerce({
    clientId: 'node-app',
    accessToken: env('BCPROXY_TOKEN'),
    storeHash: env('BCPROXY_STORE_HASH'),
    responseType: 'json',
    apiVersion,
    agent,
    failOnLimitReached: true,
  });

async function notFound(call) {
  try {
    await call();
  } catch (e) {
    assert.strictEqual(e.code, 404, e.message);
    return;
  }
  throw new Error('expected a 404');
}

async function v3() {
  const bc = client('v3');
  const list = await bc.get('/catalog/products?limit=5');
  assert.strictEqual(list.data.length, 5, JSON.stringify(list));
  const third = await bc.get(`/catalog/products/${list.data[2].id}`);
  assert.strictEqual(third.data.name, list.data[2].name);

  const created = await bc.post('/catalog/products', {
    name: 'Node ☕ mug v3',
    type: 'physical',
    price: 9.5,
    weight: 1,
  });
  const id = created.data.id;
  assert.ok(id, JSON.stringify(created));
  assert.strictEqual((await bc.get(`/catalog/products/${id}`)).data.name, 'Node ☕ mug v3');

  await bc.put(`/catalog/products/${id}`, { name: 'Node ☕ mug v3 renamed' });
  assert.strictEqual((await bc.get(`/catalog/products/${id}`)).data.name, 'Node ☕ mug v3 renamed');

  await bc.delete(`/catalog/products/${id}`);
  await notFound(() => bc.get(`/catalog/products/${id}`));
}

async function v2() {
  const bc = client('v2');
  const list = await bc.get('/products?limit=5');
  assert.strictEqual(list.length, 5, JSON.stringify(list));
  const count = await bc.get('/products/count');
  assert.ok(count.count >= 5, JSON.stringify(count));

  const created = await bc.post('/products', {
    name: 'Node ☕ mug v2',
    type: 'physical',
    price: '9.50',
    weight: '1',
    categories: [1],
    availability: 'available',
  });
  assert.ok(created.id, JSON.stringify(created));
  assert.strictEqual((await bc.get(`/products/${created.id}`)).name, 'Node ☕ mug v2');

  await bc.put(`/products/${created.id}`, { name: 'Node ☕ mug v2 renamed' });
  assert.strictEqual((await bc.get(`/products/${created.id}`)).name, 'Node ☕ mug v2 renamed');

  await bc.delete(`/products/${created.id}`);
  await notFound(() => bc.get(`/products/${created.id}`));
}

(async () => {
  await v3();
  await v2();
  agent.destroy();
  console.log('ok');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
