// @ts-check
/** Entry point: creates the editor and exposes it as `window.app` for extensions and tests. */
import { App } from "./app.js";

const app = new App();
Object.assign(window, { app });
app.start();
