package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/wechat-login/caddy-wechat-login/middleware"
)

func init() {
	fs := flag.NewFlagSet("wechat-login", flag.ContinueOnError)
	fs.String("config", "", "Configuration file (default: the Caddyfile in the current directory)")
	fs.String("adapter", "", "Name of the config adapter (caddyfile for a Caddyfile by another name)")
	fs.Duration("timeout", 30*time.Second, "How long each site's check may take")
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "wechat-login",
		Usage: "check [--config <path>] [--adapter <name>] [--timeout <duration>]",
		Short: "Asks WeChat whether every wechat_login site of a config can log users in",
		Long: `
check loads a configuration as "caddy validate" does (adapting a Caddyfile),
but provisions nothing: it starts no server and opens no store or file. It
finds every wechat_login handler in the config and asks WeChat, for each,
what logins need: an access token (cgi-bin/stable_token in
normal mode, which retires no token a running Caddy holds) and, with the qr
method, one QR code that expires in a minute. It prints a report per site, in
plain words, with what to change: add this server's IP address to the
account's IP whitelist, confirm it as the account's admin, correct the app
secret, use methods code on an account that may not create QR codes. What no
harmless call can show (the console's push settings, web authorization, a
website app's secret) is listed with what to look at instead.

Secrets in {env.*} and {file.*} placeholders are resolved as Caddy resolves
them, and never printed. The exit status is 0 when nothing stops logins, 1
otherwise.
`,
		Flags: fs,
		Func:  cmdCheck,
	})
}

// cmdCheck runs `caddy wechat-login check`.
func cmdCheck(fl caddycmd.Flags) (int, error) {
	if args := fl.Args(); len(args) != 1 || args[0] != "check" {
		return caddy.ExitCodeFailedStartup, errors.New("usage: caddy wechat-login check [--config <path>] [--adapter <name>] [--timeout <duration>]")
	}
	configFile := fl.String("config")
	input, configFile, _, err := caddycmd.LoadConfig(configFile, fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if input == nil {
		return caddy.ExitCodeFailedStartup, errors.New("no config to check: give one with --config, or run where a Caddyfile is")
	}
	timeout := fl.Duration("timeout")
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	bad, total, err := checkConfig(context.Background(), os.Stdout, caddy.RemoveMetaFields(input), timeout)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if bad > 0 {
		// A status of 1 needs an error to reach the exit code; the
		// report itself is already on stdout.
		return caddy.ExitCodeFailedStartup, fmt.Errorf("wechat_login check of %s: %d of %d sites cannot log users in", configFile, bad, total)
	}
	return caddy.ExitCodeSuccess, nil
}

// foundHandler is one wechat_login handler of a config, with the sites it
// serves. Handlers with the same settings are checked once.
type foundHandler struct {
	raw   json.RawMessage // its JSON, without the "handler" key
	sites []string
}

// checkConfig checks every wechat_login handler of a JSON config, writing a
// report per handler to w, and returns how many have problems.
func checkConfig(ctx context.Context, w io.Writer, config []byte, timeout time.Duration) (bad, total int, err error) {
	handlers, err := findHandlers(config)
	if err != nil {
		return 0, 0, err
	}
	if len(handlers) == 0 {
		return 0, 0, errors.New("the config has no wechat_login handler")
	}
	for i, fh := range handlers {
		if i > 0 {
			fmt.Fprintln(w)
		}
		report, sandbox := checkHandler(ctx, fh.raw, timeout)
		title := "== " + strings.Join(fh.sites, ", ")
		switch {
		case sandbox:
			title += "  (sandbox)"
		case report.AppID != "":
			title += "  (Official Account " + report.AppID + ")"
		case report.OpenAppID != "":
			title += "  (website app " + report.OpenAppID + ")"
		}
		fmt.Fprintln(w, title)
		for line := range strings.Lines(report.String()) {
			fmt.Fprint(w, "  "+line)
		}
		switch n := report.Problems(); {
		case sandbox:
			fmt.Fprintln(w, "-- ok: the sandbox is a built-in fake WeChat; there is nothing to ask WeChat")
		case n == 0:
			fmt.Fprintln(w, "-- ok: nothing stops logins")
		case n == 1:
			fmt.Fprintln(w, "-- 1 problem stops logins")
		default:
			fmt.Fprintf(w, "-- %d problems stop logins\n", n)
		}
		if !report.OK() {
			bad++
		}
	}
	fmt.Fprintln(w)
	if bad == 0 {
		fmt.Fprintf(w, "wechat_login check: all %d checked, nothing stops logins\n", len(handlers))
	} else {
		fmt.Fprintf(w, "wechat_login check: %d of %d cannot log users in\n", bad, len(handlers))
	}
	return bad, len(handlers), nil
}

// checkHandler provisions nothing: it resolves the handler's options into
// the middleware's configuration exactly as Provision does (placeholders
// included), which starts no server, opens no store or file and makes no
// network call, and hands that to middleware.Check.
func checkHandler(ctx context.Context, raw json.RawMessage, timeout time.Duration) (middleware.CheckReport, bool) {
	var h Handler
	if err := caddy.StrictUnmarshalJSON(raw, &h); err != nil {
		return configProblem(fmt.Errorf("decoding the handler: %w", err)), false
	}
	if h.Sandbox {
		return middleware.CheckReport{}, true
	}
	if err := h.Validate(); err != nil {
		return configProblem(err), false
	}
	cfg, _, err := h.config(caddy.NewReplacer())
	if err != nil {
		r := configProblem(err)
		r.AppID, r.OpenAppID = cfg.AppID, cfg.OpenAppID
		return r, false
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return middleware.Check(ctx, cfg), false
}

func configProblem(err error) middleware.CheckReport {
	return middleware.CheckReport{Findings: []middleware.Finding{{
		Severity: middleware.SeverityProblem,
		Topic:    "configuration",
		Message:  err.Error(),
		Fix:      "correct the option named; nothing was asked of WeChat",
	}}}
}

// findHandlers walks a JSON config for wechat_login handlers, wherever
// they are (routes, subroutes, error routes), naming each by the hosts its
// routes match or else by its server.
func findHandlers(config []byte) ([]*foundHandler, error) {
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	var out []*foundHandler
	byJSON := map[string]*foundHandler{}
	var walk func(v any, site string)
	walk = func(v any, site string) {
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				walk(e, site)
			}
		case map[string]any:
			if x["handler"] == "wechat_login" {
				m := make(map[string]any, len(x))
				for k, v := range x {
					if k != "handler" {
						m[k] = v
					}
				}
				raw, _ := json.Marshal(m) // sorted keys: equal settings, equal JSON
				fh := byJSON[string(raw)]
				if fh == nil {
					fh = &foundHandler{raw: raw}
					byJSON[string(raw)] = fh
					out = append(out, fh)
				}
				if !slices.Contains(fh.sites, site) {
					fh.sites = append(fh.sites, site)
				}
				return
			}
			if hosts := matchedHosts(x["match"]); len(hosts) > 0 {
				site = strings.Join(hosts, ", ")
			}
			for _, k := range sortedKeys(x) {
				if k != "servers" {
					walk(x[k], site)
					continue
				}
				servers, _ := x[k].(map[string]any)
				for _, name := range sortedKeys(servers) {
					srv, _ := servers[name].(map[string]any)
					walk(srv, serverName(name, srv))
				}
			}
		}
	}
	walk(root, "")
	return out, nil
}

// matchedHosts returns the hosts a route's matcher sets name.
func matchedHosts(match any) []string {
	sets, _ := match.([]any)
	var hosts []string
	for _, s := range sets {
		set, _ := s.(map[string]any)
		hs, _ := set["host"].([]any)
		for _, h := range hs {
			if h, ok := h.(string); ok && !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	return hosts
}

// serverName names a site without host matchers by its server.
func serverName(name string, srv map[string]any) string {
	var listen []string
	ls, _ := srv["listen"].([]any)
	for _, l := range ls {
		if l, ok := l.(string); ok {
			listen = append(listen, l)
		}
	}
	if len(listen) == 0 {
		return "server " + name
	}
	return "server " + name + " (" + strings.Join(listen, " ") + ")"
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
