/**
 * Colours by meaning, and none at all when NO_COLOR is set (https://no-color.org): then the selection shows as a
 * double border and a marker, errors as their words, so nothing depends on colour.
 */
import { createContext, useContext } from "react";

export interface Theme {
  readonly accent: string | undefined;
  readonly read: string | undefined;
  readonly write: string | undefined;
  readonly error: string | undefined;
  readonly warn: string | undefined;
  readonly ok: string | undefined;
  readonly dim: boolean;
}

const COLOURED: Theme = { accent: "cyan", read: "green", write: "magenta", error: "red", warn: "yellow", ok: "green", dim: true };
const PLAIN: Theme = { accent: undefined, read: undefined, write: undefined, error: undefined, warn: undefined, ok: undefined, dim: false };

/** The theme the environment asks for: NO_COLOR present and not empty turns colour off. */
export function themeFor(env: Readonly<Record<string, string | undefined>>): Theme {
  const noColor = env.NO_COLOR;
  return noColor !== undefined && noColor !== "" ? PLAIN : COLOURED;
}

export const ThemeContext = createContext<Theme>(COLOURED);

export function useTheme(): Theme {
  return useContext(ThemeContext);
}
