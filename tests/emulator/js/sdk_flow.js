// The service's TypeScript SDK (tnl-midjourney-api, as installed from npm) run unchanged against the
// emulator: only its base URL is changed, by an axios interceptor that rewrites the SDK's hard-coded
// https://api.thenextleg.io to NEXTLEG_BASE_URL. Every call goes through the SDK's own methods.
//
// Environment: NEXTLEG_BASE_URL (the emulator, no /v2), NEXTLEG_AUTH_TOKEN, NEXTLEG_POLL_MS, and
// TNL_SDK (the directory of the installed package, default: resolved from NODE_PATH).
// Prints one JSON object: what each step of the flow answered.
'use strict';

const path = require('path');

const sdkDir = process.env.TNL_SDK || path.dirname(require.resolve('tnl-midjourney-api/package.json'));
// The axios the SDK itself requires, so that the interceptor sees the SDK's requests.
const axios = require(require.resolve('axios', { paths: [sdkDir] }));
const sdk = require(sdkDir);

const REAL_HOST = 'https://api.thenextleg.io';
const BASE_URL = process.env.NEXTLEG_BASE_URL;
const TOKEN = process.env.NEXTLEG_AUTH_TOKEN;
const POLL_MS = Number(process.env.NEXTLEG_POLL_MS || 50);
const WANT_BALANCED = process.argv.includes('--balanced');

axios.interceptors.request.use((config) => {
  if (config.url.startsWith(REAL_HOST)) {
    config.url = BASE_URL + config.url.slice(REAL_HOST.length);
  }
  return config;
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function finished(poll) {
  for (let attempt = 0; attempt < 400; attempt += 1) {
    const body = await poll();
    if (body.progress === 100) return body.response;
    if (body.progress === 'incomplete') throw new Error('incomplete');
    await sleep(POLL_MS);
  }
  throw new Error('no result within 400 polls');
}

async function direct() {
  const tnl = new sdk.TNL(TOKEN);
  const out = {};
  const poll = (messageId) => finished(() => tnl.getMessageAndProgress(messageId, 5));

  out.imagine = await tnl.imagine('A Rhinoceros in the Amazon, photorealistic --ar 3:2', 'sdk-ref');
  out.grid = await poll(out.imagine.messageId);
  out.variation = await poll((await tnl.button('V1', out.grid.buttonMessageId)).messageId);
  out.upscale = await poll((await tnl.button('U2', out.grid.buttonMessageId)).messageId);
  out.favorite = await poll((await tnl.button('❤️ Favorite', out.upscale.buttonMessageId)).messageId);
  out.seed = await tnl.getSeed(out.imagine.messageId);
  out.img2img = await poll((await tnl.img2img('in watercolor', out.grid.imageUrls[0])).messageId);
  out.describe = await poll((await tnl.describe(out.grid.imageUrl)).messageId);
  out.settings = await poll((await tnl.getSettings()).messageId);
  out.setSettings = await poll((await tnl.setSettings('Relax mode')).messageId);
  out.slashCommand = await poll((await tnl.slashCommand('fast')).messageId);
  out.info = await poll((await tnl.getInfo()).messageId);
  // In the SDK's source, not in its published releases:
  if (typeof tnl.upscaleImgUrl === 'function') {
    out.upscaleImgUrl = await tnl.upscaleImgUrl('U3', out.grid.buttonMessageId);
  }
  if (typeof tnl.getImage === 'function') {
    const image = await tnl.getImage(out.grid.imageUrls[1]);
    let bytes = 0;
    for await (const chunk of image.data) bytes += chunk.length;
    out.getImage = { status: image.status, contentType: image.headers['content-type'], bytes };
  }
  return out;
}

async function balanced() {
  const lb = new sdk.TNLBalanced(TOKEN);
  const out = {};
  const poll = (answer) => finished(() => lb.getMessageAndProgress(answer.messageId, answer.loadBalanceId, 5));

  out.imagines = [];
  for (const prompt of ['a lighthouse', 'a koi pond', 'a paper boat']) {
    out.imagines.push(await lb.imagine(prompt, prompt));
  }
  out.grids = [];
  for (const answer of out.imagines) out.grids.push(await poll(answer));
  const grid = out.grids[1];
  out.button = await lb.button('U1', grid.buttonMessageId, grid.loadBalanceId);
  out.upscale = await poll(out.button);
  out.describeAnswer = await lb.describe(grid.imageUrl);
  out.describe = await poll(out.describeAnswer);
  return out;
}

(WANT_BALANCED ? balanced() : direct())
  .then((out) => console.log(JSON.stringify(out)))
  .catch((error) => {
    const answer = error.response ? ` (HTTP ${error.response.status}: ${JSON.stringify(error.response.data)})` : '';
    console.error(`${error.stack}${answer}`);
    process.exit(1);
  });
