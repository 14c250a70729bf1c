// @ts-check
/**
 * Compatibility module for custom-node web extensions written for ComfyUI, which do
 * `import { app } from "/scripts/app.js"` and call `app.registerExtension({...})`.
 */
export const app = /** @type {any} */ (globalThis).app;
