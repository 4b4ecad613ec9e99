package wechattest

import "fmt"

// AccountType is the sort of Official Account an [App] is. WeChat grants
// APIs by account type and verification (认证), and this fake refuses what
// the real platform refuses, with the same answers.
//
//	                               qrcode/create  web authorization  user/info  push modes
//	VerifiedServiceAccount         yes            yes                yes        all three
//	UnverifiedServiceAccount       48001          10005              48001      all three
//	SubscriptionAccount            48001          10005              48001      all three
//	VerifiedSubscriptionAccount    48001          10005              yes        all three
//	TestAccount                    yes            yes, followers     yes        plaintext only
//
// Every type gets access tokens and receives pushes: follows, unfollows,
// scans and the text messages of its followers, which it may answer with a
// passive reply. A test account (接口测试号) has smaller daily quotas (200
// access tokens, 10,000 QR codes), no EncodingAESKey and therefore only
// plaintext pushes, and serves only users who follow it: web authorization
// by anyone else ends on error page 10006.
type AccountType int

// The account types. The zero value, a verified service account (已认证服务号),
// may use every API this fake serves.
const (
	VerifiedServiceAccount      AccountType = iota // 服务号, verified
	UnverifiedServiceAccount                       // 服务号, not verified
	SubscriptionAccount                            // 订阅号, not verified
	VerifiedSubscriptionAccount                    // 订阅号, verified
	TestAccount                                    // 接口测试号 (sandbox test account)
)

// String returns the type's name as the sandbox's JSON shows it.
func (t AccountType) String() string {
	switch t {
	case VerifiedServiceAccount:
		return "verified_service"
	case UnverifiedServiceAccount:
		return "unverified_service"
	case SubscriptionAccount:
		return "subscription"
	case VerifiedSubscriptionAccount:
		return "verified_subscription"
	case TestAccount:
		return "test"
	}
	return fmt.Sprintf("AccountType(%d)", int(t))
}

// accountOf returns the account type of an app; an unknown app (removed
// since its token was issued) can do nothing.
func (p *Platform) accountOf(appID string) AccountType {
	p.mu.Lock()
	defer p.mu.Unlock()
	if a := p.apps[appID]; a != nil {
		return a.Account
	}
	return AccountType(-1)
}

func (t AccountType) valid() bool { return t >= VerifiedServiceAccount && t <= TestAccount }

// canCreateQR reports whether the account may create parametric QR codes:
// only verified service accounts and test accounts may.
func (t AccountType) canCreateQR() bool {
	return t == VerifiedServiceAccount || t == TestAccount
}

// canAuthorize reports whether the account may use web authorization
// (snsapi_base and snsapi_userinfo): only verified service accounts and
// test accounts may; subscription accounts never, even verified.
func (t AccountType) canAuthorize() bool {
	return t == VerifiedServiceAccount || t == TestAccount
}

// canReadFollowers reports whether the account may call cgi-bin/user/info:
// verified accounts of either type, and test accounts.
func (t AccountType) canReadFollowers() bool {
	return t == VerifiedServiceAccount || t == VerifiedSubscriptionAccount || t == TestAccount
}

// Daily quotas of the API call limits table.
const (
	testTokenDailyQuota = 200
	qrDailyQuota        = 100000
	testQRDailyQuota    = 10000
)
